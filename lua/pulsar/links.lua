--- pulsar.links: direct links between the processes of one arbiter
-- (docs/DESIGN.md "Direct routes").
--
-- A process actor listens on a Unix socket of its own, in a private
-- directory, and says where in its hello; the arbiter's directory answers
-- `pulsar:where(target)` with that address. An actor that sends to another
-- actor outside its process for the first time asks once, connects, and
-- from then on writes every message for that target on the link; the
-- arbiter's Lua is not in the path. While the route is being made, the
-- messages for that target wait in order behind each other, so that none
-- overtakes another. A target without an address of its own (an actor in
-- the arbiter's process, seen from a process actor) is reached through the
-- arbiter's link, as before, and stays so.
--
-- The target answers on the link the request came on. When a link closes
-- (the target ended, even by kill -9), every call waiting on it fails at
-- once, and the next send to that target (a name, too: maybe by then it is
-- another actor's) makes a new route.
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

local routes = {}  -- target -> {state = "resolving" | "direct" | "relay", link, queue, aid, name}
local accepted = setmetatable({}, {__mode = "k"}) -- links other actors made to us
local hooks        -- what the mailbox gives: receive, fail, where, relay
local listener, dir

--- `receive(link, payload)` handles a message; `fail(target, message)`
-- fails the calls waiting on target; `where(target)` asks the arbiter
-- (in a task); `relay(target, payload)` sends through the arbiter.
function M.setup(mailbox_hooks) hooks = mailbox_hooks end

--- Listens for direct links (a process actor): returns the address.
function M.listen()
  dir = core.private_dir()
  local why
  listener, why = core.listen("unix:" .. dir .. "/direct.sock", function(link)
    accepted[link] = true
    link:set_handler(function(payload) hooks.receive(link, payload) end, function() accepted[link] = nil end)
  end)
  if not listener then
    core.remove_dir(dir)
    dir = nil
    error("cannot listen for direct links: " .. tostring(why), 0)
  end
  listener:unref()
  return listener.address
end

--- Where this VM listens for direct links (nil: it does not).
function M.address() return listener and listener.address end

local function connect(address)
  local f = future.Future("a direct link to " .. address)
  core.connect(address, function(link, err)
    if link then f:set_result(link) else f:set_exception(err) end
  end)
  return f:wait()
end

local function link_closed(target, r, reason)
  if routes[target] == r then routes[target] = nil end
  local message = ("actor '%s' (%s) disconnected (%s) before replying"):format(
    r.name or "?", r.aid or target, tostring(reason))
  if r.aid then hooks.fail(r.aid, message) end
  hooks.fail(target, message)
end

local function flush(r, send)
  local queue = r.queue
  r.queue = nil
  for _, payload in ipairs(queue) do send(payload) end
end

-- Makes the route to target: asks where it lives, connects, sends what
-- waited. Any failure to link leaves the target reached through the
-- arbiter, which knows best whether it exists.
local function resolve(target, r)
  local ok, where = pcall(hooks.where, target)
  if ok and type(where) == "table" then
    r.aid, r.name = where.aid, where.name
    if where.address then
      local linked, link = pcall(connect, where.address)
      if linked and routes[target] == r then
        r.state, r.link = "direct", link
        link:set_handler(function(payload) hooks.receive(link, payload) end,
                         function(reason) link_closed(target, r, reason) end)
        return flush(r, function(payload) link:send(payload) end)
      end
      if linked then link:close("not needed") end
      log.debug("no direct link to %s (%s): through the arbiter", target, tostring(link))
    end
  end
  r.state = "relay"
  flush(r, function(payload) hooks.relay(target, payload) end)
end

--- Sends payload to target on its direct link: true (sent, or queued while
-- the link is made) and the aid it reaches if known; nil and why; or false
-- when the target is reached through the arbiter (the caller's router).
function M.send(target, payload)
  local r = routes[target]
  if not r then
    r = {state = "resolving", queue = {}}
    routes[target] = r
    future.async(resolve, target, r)
  end
  if r.state == "direct" then
    local ok, why = r.link:send(payload)
    return ok, why, r.aid
  elseif r.state == "resolving" then
    r.queue[#r.queue + 1] = payload
    return true
  end
  return false
end

function M.close()
  for target, r in pairs(routes) do
    routes[target] = nil
    if r.link then r.link:close("actor stopped") end
  end
  for link in pairs(accepted) do link:close("actor stopped") end
  if listener then listener:close() end
  if dir then core.remove_dir(dir) end
  listener, dir = nil, nil
end

return M
