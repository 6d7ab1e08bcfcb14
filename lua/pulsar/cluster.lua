--- pulsar.cluster: membership of nodes kept in Redis (`--cluster`), for
-- clusters that outgrow a seed list. Redis is the source of truth for who
-- is a member; there is no consensus of our own.
--
--   local m, err = cluster.start{url = "redis://127.0.0.1:6379/pulsar",
--                                name = "a", address = "10.0.0.1:7000", ttl = 10}
--   m:members()      -> {a = "10.0.0.1:7000", b = ...} (itself included)
--   m:on_change(fn)  fn(members) whenever the set or an address changes
--   m:stop()         deletes its own key and closes
--
-- In Redis: one key per node, `PREFIX:node:NAME` = its mailbox address,
-- set with `SET ... NX EX ttl` (a name another address holds is refused),
-- renewed every ttl/3 s, so that a node that dies leaves within ttl s. The
-- members are listed every ttl/3 s (SCAN MATCH PREFIX:node:*, then MGET).
-- Redis lost later: one warning, the last view kept (links between nodes
-- go on), a reconnect every ttl/3 s and one info line when it is back. The
-- timers and the connection are unref'd: membership never keeps an arbiter
-- alive on its own.
--
-- start() may wait (connecting, registering, the first listing): call it in
-- a task (or outside any, where wait runs the loop).
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

local DEFAULT_PREFIX = "pulsar"
local SCAN_COUNT = "100"

-- Deletes KEYS[1] only if it still holds ARGV[1]: stop() never removes a
-- key that a newer node of the same name has taken since.
local DELETE_OWN = [[
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0]]

--- {host=, port=, prefix=} from "redis://HOST:PORT[/PREFIX]"; raises a
-- message naming the URL (no position: a node prints it as its one line)
-- when it is not one.
function M.parse_url(url)
  local function bad(why)
    error(("bad cluster URL %q: %s (expected redis://HOST:PORT[/PREFIX])"):format(
      tostring(url), why), 0)
  end
  if type(url) ~= "string" then bad("not a string") end
  local rest = url:match("^redis://(.+)$")
  if not rest then bad("not a redis:// URL") end
  local hostport, prefix = rest:match("^([^/]+)/(.*)$")
  if not hostport then hostport, prefix = rest, DEFAULT_PREFIX end
  if prefix == "" then prefix = DEFAULT_PREFIX end
  if not prefix:match("^[%w_.:%-]+$") then bad("the prefix may hold letters, digits and _.:-") end
  local host, port = hostport:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = hostport:match("^([^:]+):(%d+)$") end
  if not host then bad("no HOST:PORT") end
  port = tonumber(port)
  if port < 1 or port > 65535 then bad("port out of range") end
  return {host = host, port = port, prefix = prefix}
end

---------------------------------------------------------------------------
-- Redis calls as waits

-- Waits for on_ready; the client or nil, why.
local function connect(where, timeout)
  local f = future.Future("Redis at " .. where.url)
  core.redis_connect(where.host, where.port, function(client, err)
    if f:done() then
      if client then client:close() end
    else
      f:set_result({client, err})
    end
  end)
  local ok, res = pcall(f.wait, f, timeout)
  if not ok then return nil, ("no answer within %g s"):format(timeout) end
  return res[1], res[2]
end

-- Waits at most timeout s for one command's reply: reply, nil or nil, err
-- (and true when Redis did not answer in time).
local function command(client, args, timeout)
  local f = future.Future("redis " .. args[1])
  client:command(args, function(reply, err) f:set_result({reply, err}) end)
  local ok, res = pcall(f.wait, f, timeout)
  if not ok then return nil, ("no answer to %s within %g s"):format(args[1], timeout), true end
  return res[1], res[2]
end

---------------------------------------------------------------------------
-- A membership

local Membership = {}
Membership.__index = Membership

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

local function same(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- A command on this membership's connection; a Redis that does not answer
-- within ttl s (stopped, or a network that drops packets) counts as lost.
function Membership:_call(args)
  local c = self.client
  if not c then return nil, "not connected" end
  local reply, err, stalled = command(c, args, self.ttl)
  if stalled then self:_lost(err) end
  return reply, err
end

function Membership:members() return copy(self.view) end

function Membership:on_change(fn)
  if type(fn) ~= "function" then error("on_change needs a function", 2) end
  self.handlers[#self.handlers + 1] = fn
end

function Membership:_set_view(view)
  view[self.name] = self.address
  if same(view, self.view) then return end
  self.view = view
  for _, fn in ipairs(self.handlers) do
    local ok, err = pcall(fn, copy(view))
    if not ok then log.error("cluster: on_change handler: %s", tostring(err)) end
  end
end

-- SET NX EX; taken by another address: nil, the message naming both.
function Membership:_register()
  local key = self.key
  local ok, err = self:_call({"SET", key, self.address, "NX", "EX", tostring(self.ttl)})
  if err then return nil, err end
  if ok then return true end
  local holder, err2 = self:_call({"GET", key})
  if err2 then return nil, err2 end
  if holder == nil or holder == self.address then -- expired meanwhile, or ours
    local _, err3 = self:_call({"SET", key, self.address, "EX", tostring(self.ttl)})
    if err3 then return nil, err3 end
    return true
  end
  return nil, ("node name '%s' is taken: node '%s' at %s is registered in %s"):format(
    self.name, self.name, holder, self.url), "taken"
end

-- Renews the key (SET XX EX); expired meanwhile: registers again.
function Membership:_renew()
  local ok, err = self:_call(
    {"SET", self.key, self.address, "XX", "EX", tostring(self.ttl)})
  if err then return nil, err end
  if ok then return true end
  return self:_register()
end

-- Every key under PREFIX:node:*, by SCAN.
function Membership:_scan()
  local keys, cursor = {}, "0"
  repeat
    local reply, err = self:_call(
      {"SCAN", cursor, "MATCH", self.prefix .. ":node:*", "COUNT", SCAN_COUNT})
    if err then return nil, err end
    cursor = reply[1]
    for _, k in ipairs(reply[2]) do keys[#keys + 1] = k end
  until cursor == "0"
  return keys
end

-- Lists the members (SCAN, then MGET) into the view.
function Membership:_list()
  local keys, err = self:_scan()
  if not keys then return nil, err end
  local view = {}
  if #keys > 0 then
    local args = {"MGET"}
    for i, k in ipairs(keys) do args[i + 1] = k end
    local values, err2 = self:_call(args)
    if err2 then return nil, err2 end
    local skip = #self.prefix + #":node:"
    for i, k in ipairs(keys) do
      if values[i] then view[k:sub(skip + 1)] = values[i] end
    end
  end
  self:_set_view(view)
  return true
end

---------------------------------------------------------------------------
-- Losing Redis and finding it again

function Membership:_lost(why)
  if self.lost or self.stopped or self.starting then return end
  self.lost = true
  log.warning("cluster: lost Redis at %s: membership frozen at its last view (%s)",
              self.url, tostring(why))
  local c = self.client
  self.client = nil
  if c then c:close() end
end

function Membership:_attach(client)
  self.client = client
  client:unref()
  client:on_disconnect(function(why) self:_lost(why) end)
end

function Membership:_reconnect()
  local client = connect(self, self.period)
  if not client then return end
  if self.stopped then return client:close() end
  self:_attach(client)
  local ok, err, taken = self:_register()
  if not ok then
    if taken then log.error("cluster: %s", err) else self.client = nil; client:close() end
    return
  end
  self.lost = false
  log.info("cluster: Redis at %s is back", self.url)
  self:_list()
end

function Membership:_tick()
  if self.busy or self.stopped then return end
  self.busy = true
  local ok, err = pcall(function()
    if self.lost then return self:_reconnect() end
    local done, why = self:_renew()
    if done then done, why = self:_list() end
    if not done and why then
      if self.client and self.client:connected() then
        log.error("cluster: %s", why)
      else
        self:_lost(why)
      end
    end
  end)
  self.busy = false
  if not ok then log.error("cluster: %s", tostring(err)) end
end

function Membership:stop()
  if self.stopped then return end
  self.stopped = true
  if self.timer then self.timer:cancel() end
  local c = self.client
  self.client = nil
  if c and not self.lost and c:connected() then
    command(c, {"EVAL", DELETE_OWN, "1", self.key, self.address}, self.ttl)
  end
  if c then c:close() end
end

---------------------------------------------------------------------------

local function check_opts(opts)
  if type(opts) ~= "table" then error("cluster.start needs a table", 3) end
  if type(opts.name) ~= "string" or opts.name == "" then error("cluster.start: name must be a string", 3) end
  if type(opts.address) ~= "string" or opts.address == "" then
    error("cluster.start: address must be a string", 3)
  end
  local ttl = opts.ttl or 10
  if type(ttl) ~= "number" or not (ttl > 0) then
    error("cluster.start: ttl must be a positive number of seconds", 3)
  end
  return math.max(1, math.ceil(ttl)) -- EX takes whole seconds
end

--- Registers this node and starts watching the members: a Membership, or
-- nil and why (Redis unreachable, the name taken).
function M.start(opts)
  local ttl = check_opts(opts)
  local where = M.parse_url(opts.url)
  local self = setmetatable({
    url = opts.url, host = where.host, port = where.port, prefix = where.prefix,
    name = opts.name, address = opts.address, ttl = ttl, period = ttl / 3,
    key = where.prefix .. ":node:" .. opts.name, view = {}, handlers = {},
  }, Membership)
  self.view[self.name] = self.address
  local client, why = connect(self, math.max(ttl, 2))
  if not client then return nil, ("cannot reach Redis at %s: %s"):format(opts.url, why) end
  self:_attach(client)
  self.starting = true
  local ok, err = self:_register()
  if ok then ok, err = self:_list() end
  self.starting = false
  if not ok then
    self.client = nil
    client:close()
    if err and not err:match("^node name") then
      err = ("cannot reach Redis at %s: %s"):format(opts.url, err)
    end
    return nil, err
  end
  self.timer = core.timer(self.period, function() future.async(self._tick, self) end, self.period)
  self.timer:unref()
  return self
end

return M
