--- pulsar.nodes: one system of actors across machines (docs/API.md
-- "Nodes", docs/DESIGN.md "Nodes"). Only the arbiter of a node
-- (`--node NAME --mailbox HOST:PORT`) loads this module.
--
-- Links. Two nodes link over the TCP mailbox. The dialer proves the cookie
-- (pulsar.auth: both sides prove it, and nothing the other sends is decoded
-- as a command before), then calls `pulsar:node_hello{name=, address=}` on
-- the new link; the other node answers with its own name and address and
-- the members it is linked to, and the dialer links to each of those it
-- does not know yet: a full mesh, as Erlang's. A node never has two links to
-- one peer: a name already linked (or this node's own) is refused, naming
-- both nodes. When two nodes dial each other at once, the link dialled by
-- the node whose name sorts first is kept, and the other is refused as
-- "crossed", which its dialer does not count as a failure.
--
-- Messages. An aid on a node ends in "@NODE", and "name@node" is a target
-- on that node. The arbiter sends an envelope for another node on that
-- node's link, unchanged and in order; the other arbiter relays it as any
-- other. A call relayed to a node is remembered (the peer's inflight, as a
-- local actor's record has), so that it fails at once when the node goes
-- down, naming the node and why; nothing is sent twice.
--
-- Failure. Every tick (node_timeout / 4) each linked peer gets a
-- `pulsar:node_tick` call, whose round trip is its rtt. A peer from which
-- nothing came for node_timeout seconds is down, and so is one whose link
-- closed: the link is closed, its calls fail, and the functions given to
-- monitor_node for it run once. A node that was frozen itself (a tick late
-- by more than half of node_timeout, as after SIGSTOP) gives its peers a
-- fresh node_timeout rather than declaring them all down at once.
--
-- Coming back. A down peer that is still a member (it did not say it was
-- leaving, and it is in the store when there is one) is dialled again at
-- each tick by the one of the two whose name sorts first, so that two nodes
-- do not keep crossing. While it is down, a send to it fails at once.
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"
local mailbox = require "pulsar.mailbox"

local M = {}

local CROSSED = "crossed: the link the other node dialled is kept"

local my_name, my_address, cookie, timeout
local hooks          -- from the arbiter: fail_request(env, message)
local peers = {}     -- name -> Peer
local by_link = setmetatable({}, {__mode = "k"}) -- link -> Peer
local watchers = {}  -- name -> {fn, ...}: monitor_node's, called once
local ticker, last_tick
local membership     -- pulsar.cluster's object, with --cluster

local function now() return core.now() end

--- Whether `name` can be a node's name (as --node checks it).
function M.valid_name(name)
  return type(name) == "string" and #name >= 1 and #name <= 64 and name:match("^[%w%-_%.]+$") ~= nil
end

---------------------------------------------------------------------------
-- Peer: another node, linked or not.

local Peer = {}
Peer.__index = Peer

local function new_peer(name, address)
  local peer = setmetatable({name = name, address = address, state = "down", queue = {},
                             inflight = {}, sent = 0, received = 0}, Peer)
  peers[name] = peer
  return peer
end

--- Sends an encoded envelope to this node: on its link, or queued while
-- the first link is made; nil and why when it is down.
function Peer:send(payload)
  if self.state == "up" then
    local ok, why = self.link:send(payload)
    if ok then self.sent = self.sent + 1 end
    return ok, why
  elseif self.state == "connecting" then
    self.queue[#self.queue + 1] = payload
    return true
  end
  return nil, ("node '%s' is down (%s)"):format(self.name, self.down_reason or "not linked")
end

local function flush(peer)
  local queue = peer.queue
  peer.queue = {}
  for _, payload in ipairs(queue) do peer:send(payload) end
end

local function fire_watchers(name, why)
  local list = watchers[name]
  watchers[name] = nil
  for _, fn in ipairs(list or {}) do
    future.async(function()
      local ok, err = pcall(fn, name, why)
      if not ok then log.error("monitor_node('%s') function failed: %s", name, tostring(err)) end
    end)
  end
end

-- The peer is down: its link closes, what waits on it fails, its watchers
-- are told. It stays known, to be linked again.
local function down(peer, why)
  if peer.state == "down" then return end
  peer.state, peer.down_reason, peer.since = "down", why, now()
  local link = peer.link
  peer.link, peer.queue = nil, {}
  if link then
    by_link[link] = nil
    link:close(why)
  end
  local message = ("node '%s' is down (%s)"):format(peer.name, why)
  log.warning("%s", message)
  for key, env in pairs(peer.inflight) do
    peer.inflight[key] = nil
    hooks.fail_request(env, ("%s before replying to '%s'"):format(message, tostring(env.command)))
  end
  mailbox.fail_pending("@" .. peer.name, message .. " before replying")
  fire_watchers(peer.name, why)
end

local function link_closed(link, reason)
  local peer = by_link[link]
  by_link[link] = nil
  if peer and peer.link == link then
    peer.link = nil
    down(peer, ("its link closed: %s"):format(tostring(reason)))
  end
end

-- `link` (proved, its hello exchanged) is now the peer's link.
local function adopt(peer, link, address)
  if peer.link and peer.link ~= link then
    local old = peer.link
    by_link[old], peer.link = nil, nil
    old:close("replaced by a new link")
  end
  peer.link, peer.address, peer.state = link, address or peer.address, "up"
  peer.since, peer.last_heard, peer.down_reason, peer.left = now(), now(), nil, nil
  by_link[link] = peer
  link:set_handler(function(payload)
    peer.received, peer.last_heard = peer.received + 1, now()
    mailbox.receive(link, payload)
  end, function(reason) link_closed(link, reason) end)
  log.info("node '%s' linked (%s)", peer.name, tostring(peer.address))
  flush(peer)
end

---------------------------------------------------------------------------
-- Dialling

local function connect(address)
  local f = future.Future("a link to the node at " .. address)
  core.connect(address, function(link, err)
    if f:done() then
      if link then link:close("too late") end
    elseif link then f:set_result(link)
    else f:set_exception(tostring(err)) end
  end)
  local ok, link = pcall(f.wait, f, timeout)
  if ok then return link end
  return nil, f:done() and tostring(link) or ("no answer within %g s"):format(timeout)
end

-- The members this node is linked to, for a newcomer: name -> address.
local function members(except)
  local list = {}
  for name, peer in pairs(peers) do
    if name ~= except and peer.state == "up" and peer.address then list[name] = peer.address end
  end
  return list
end

local link_to -- defined below; members are linked to in turn

-- Links to every member a peer told of, each in a task; returns their tasks.
local function link_members(list)
  local tasks = {}
  if type(list) ~= "table" then return tasks end
  for name, address in pairs(list) do
    if M.valid_name(name) and type(address) == "string" and name ~= my_name then
      local peer = peers[name]
      if not peer or peer.state == "down" then
        tasks[#tasks + 1] = future.async(link_to, address, name)
      end
    end
  end
  return tasks
end

-- The hello on a proved link: the other node's answer, or nil and why.
local function hello(link, address)
  link:set_handler(function(payload) mailbox.receive(link, payload) end, function() end)
  local key = "@dial " .. address
  local f = mailbox.send_on(link, "arbiter", key, "pulsar:node_hello", {name = my_name, address = my_address})
  local ok, answer = pcall(f.wait, f, timeout)
  if not ok then
    mailbox.fail_pending(key, "gave up")
    return nil, f:done() and tostring(answer):gsub("^actor '[^']*' %([^)]*%): ", "") or
      ("no answer to the hello within %g s"):format(timeout)
  end
  if type(answer) ~= "table" or not M.valid_name(answer.name) then
    return nil, "its answer to the hello is malformed"
  end
  return answer
end

--- Inside a task: links to the node at `address` (expected to be `name`,
-- when known) and to every member it knows; returns the Peer, or nil, why
-- and whether the refusal is for good (a name taken).
link_to = function(address, name)
  local peer = name and (peers[name] or new_peer(name, address))
  if peer then
    if peer.state == "up" or peer.dialing then return peer end
    peer.dialing = true
    if not peer.since then peer.state = "connecting" end -- never linked: sends wait
  end
  local function failed(why, final)
    if peer then
      peer.dialing = false
      if peer.state == "connecting" and why ~= CROSSED then down(peer, "cannot link: " .. why) end
    end
    return nil, why, final
  end
  local link, why = connect(address)
  if not link then return failed(why) end
  local proved, refusal = require("pulsar.auth").prove(link, cookie, timeout)
  if not proved then
    link:close("not proved")
    return failed(refusal)
  end
  local answer
  answer, why = hello(link, address)
  if not answer then
    link:close("no hello")
    return failed(why, why and why:find("is taken", 1, true) ~= nil)
  end
  local real = peers[answer.name] or new_peer(answer.name, address)
  if peer and real ~= peer then peer.dialing = false; down(peer, "it is node '" .. answer.name .. "'") end
  real.dialing = false
  if real.state == "up" then -- linked meanwhile, the other way
    link:close("already linked")
    return real
  end
  adopt(real, link, type(answer.address) == "string" and answer.address or address)
  for _, task in ipairs(link_members(answer.members)) do pcall(task.wait, task, timeout * 2) end
  return real
end

---------------------------------------------------------------------------
-- The other side: a node's hello on a link the TCP mailbox admitted

-- Why a node called `name` at `address` cannot link, or nil.
local function clash(name, address)
  if name == my_name then
    return ("node name '%s' is taken: this node '%s' at %s has it (refusing the node at %s)"):format(
      name, name, my_address, address)
  end
  local peer = peers[name]
  if peer and peer.state == "up" and peer.link then
    return ("node name '%s' is taken: node '%s' at %s is already a member (refusing the node at %s)"):format(
      name, name, tostring(peer.address), address)
  end
end

local function on_hello(request, msg)
  local link = request.link
  if not link then error("pulsar:node_hello comes from another node, on its link", 0) end
  if type(msg) ~= "table" or not M.valid_name(msg.name) or type(msg.address) ~= "string" then
    error("pulsar:node_hello: malformed (want {name=, address=})", 0)
  end
  local why = clash(msg.name, msg.address)
  if why then
    log.error("%s", why)
    error(why, 0)
  end
  local peer = peers[msg.name] or new_peer(msg.name, msg.address)
  if peer.dialing and my_name < msg.name then error(CROSSED, 0) end
  adopt(peer, link, msg.address)
  return {name = my_name, address = my_address, members = members(msg.name)}
end

---------------------------------------------------------------------------
-- Heartbeats

local function ping(peer)
  if peer.pinging then return end
  peer.pinging = true
  future.async(function()
    local t0 = core.hrtime()
    local ok = pcall(function() return mailbox.send("arbiter@" .. peer.name, "pulsar:node_tick"):wait(timeout) end)
    peer.pinging = false
    if ok then peer.rtt = core.hrtime() - t0 end
  end)
end

local function member_wanted(peer)
  if peer.left or not peer.address then return false end
  if membership then return membership:members()[peer.name] ~= nil end
  return true
end

local function tick()
  local t, interval = now(), M.tick_interval()
  local frozen = last_tick and t - last_tick > interval + timeout / 2
  last_tick = t
  for _, peer in pairs(peers) do
    if peer.state == "up" then
      if frozen then peer.last_heard = t end
      if t - peer.last_heard > timeout then
        down(peer, ("no answer for %g s"):format(timeout))
      else
        ping(peer)
      end
    elseif peer.state == "down" and not peer.dialing and my_name < peer.name and member_wanted(peer) then
      future.async(link_to, peer.address, peer.name)
    end
  end
end

function M.tick_interval() return math.max(0.1, timeout / 4) end

---------------------------------------------------------------------------
-- Membership in Redis (--cluster): the store says who is a member.

local function members_changed(list)
  for name, address in pairs(list) do
    local peer = peers[name]
    if name ~= my_name and (not peer or (peer.state == "down" and not peer.dialing)) and my_name < name then
      future.async(link_to, address, name)
    elseif peer and peer.state == "down" then
      peer.address = address
    end
  end
  for name, peer in pairs(peers) do
    if not list[name] then peer.left = true end -- gone from the store: not dialled again
  end
end

--- Inside a task: joins the cluster kept in Redis at `url`; raises a
-- message for the user when it cannot.
function M.join_cluster(url)
  local cluster = require "pulsar.cluster"
  local obj, why = cluster.start{url = url, name = my_name, address = my_address, ttl = timeout}
  if not obj then error(why, 0) end
  membership = obj
  obj:on_change(members_changed)
  local tasks = {}
  for name, address in pairs(obj:members()) do
    if name ~= my_name then tasks[#tasks + 1] = future.async(link_to, address, name) end
  end
  for _, task in ipairs(tasks) do pcall(task.wait, task, timeout * 2) end
end

---------------------------------------------------------------------------
-- What the arbiter uses

--- Makes this arbiter node `name`, reached at `address` (its TCP mailbox);
-- `fail_request(env, message)` fails a relayed call.
function M.setup(arbiter, fail_request)
  my_name, my_address = arbiter.cfg.node, arbiter.tcp_address
  timeout = arbiter.cfg.node_timeout or 10
  cookie = assert(core.load_cookie(arbiter.cfg.cookie_file))
  hooks = {fail_request = fail_request}
  mailbox.command("pulsar:node_hello", on_hello)
  mailbox.command("pulsar:node_tick", function() return true end)
  mailbox.command("pulsar:node_leaving", function(request)
    local peer = request.link and by_link[request.link]
    if peer then
      peer.left = true
      down(peer, "it stopped")
    end
  end, {ack = false})
  mailbox.command("pulsar:nodes", function() return M.names() end)
  mailbox.command("pulsar:monitor_node", function(request, name)
    local caller = request.caller
    M.monitor(name, function(node, why) mailbox.cast(caller, "pulsar:node_down", node, why) end)
    return true
  end)
  ticker = core.timer(M.tick_interval(), tick, M.tick_interval())
  ticker:unref()
end

--- Inside a task: links to the nodes at `addresses` ("HOST:PORT,...") and
-- to every member they know, each within node_timeout. A seed that does
-- not answer is logged, and the node goes on alone; a name taken is
-- raised: this node must not run under it.
function M.join(addresses)
  local tasks = {}
  for address in addresses:gmatch("[^,]+") do
    tasks[#tasks + 1] = {address = address, task = future.async(function()
      local peer, why, final = link_to(address)
      return {peer = peer, why = why, final = final}
    end)}
  end
  local joined = 0
  for _, t in ipairs(tasks) do
    local ok, r = pcall(t.task.wait, t.task, timeout * 3)
    if ok and r.peer then
      joined = joined + 1
    elseif ok and r.final then
      error(r.why, 0)
    else
      log.error("cannot join the node at %s: %s", t.address, tostring(ok and r.why or r))
    end
  end
  if joined == 0 then log.warning("node '%s' runs alone: no node of --join %s answered", my_name, addresses) end
end

--- The peer to send to for node `name`: linked, or being linked (first
-- use); nil and why when there is no such node, or it is down.
function M.route(name)
  local peer = peers[name]
  if not peer then
    local address = membership and membership:members()[name]
    if not address then
      local names = M.names()
      return nil, ("no node '%s' in the cluster (linked: %s)"):format(
        name, #names > 0 and table.concat(names, ", ") or "none")
    end
    peer = new_peer(name, address)
    peer.state = "connecting" -- linked on first use: what is sent meanwhile waits
    future.async(link_to, address, name)
  end
  if peer.state == "down" then return nil, ("node '%s' is down (%s)"):format(name, peer.down_reason or "?") end
  return peer
end

--- The peer whose link this is, if it is a node's.
function M.peer_of(link) return by_link[link] end

--- The names of the nodes linked now, sorted.
function M.names()
  local list = {}
  for name, peer in pairs(peers) do
    if peer.state == "up" then list[#list + 1] = name end
  end
  table.sort(list)
  return list
end

--- Calls fn(name, reason) once when node `name` goes down (at once, in a
-- task, when it is not linked now).
function M.monitor(name, fn)
  if type(name) ~= "string" then error("monitor_node: the node's name must be a string", 3) end
  if type(fn) ~= "function" then error("monitor_node: fn must be a function", 3) end
  local peer = peers[name]
  local list = watchers[name] or {}
  watchers[name] = list
  list[#list + 1] = fn
  if not peer or peer.state == "down" then
    fire_watchers(name, peer and peer.down_reason or "not linked")
  end
end

--- The arbiter's info.nodes: name -> {address, state, rtt, sent, received, since}.
function M.info()
  local info = {}
  for name, peer in pairs(peers) do
    info[name] = {address = peer.address, state = peer.state, rtt = peer.rtt, sent = peer.sent,
                  received = peer.received, since = peer.since, reason = peer.down_reason}
  end
  return info
end

--- This node stops: its peers are told, so that they do not dial it again.
function M.close()
  if ticker then ticker:cancel() end
  ticker = nil
  for _, peer in pairs(peers) do
    if peer.state == "up" then
      pcall(mailbox.cast, "arbiter@" .. peer.name, "pulsar:node_leaving")
      local link = peer.link
      by_link[link], peer.link, peer.state = nil, nil, "down"
      link:close("node stopping", 0.1) -- after what is queued: the notice above
    end
  end
  if membership then membership:stop() end
  membership = nil
end

return M
