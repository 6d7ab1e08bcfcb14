--- pulsar.mailbox: messages between actors (docs/API.md §2 "Messages and
-- commands", §3 "The mailbox protocol"; docs/DESIGN.md "Direct routes").
--
-- One mailbox per VM. `send` encodes an envelope
--   {command=, id=, sender=, target=, args={...}, ack=}
-- straight from its arguments (core.encode_request, codec/envelope.c: no
-- Lua table is made for it) and hands it over on a route:
--   - from an actor to another of its process (a monitor, a thread actor),
--     straight into that VM's inbox (core.route, inbox.c): encoded once, in
--     place, and handed over by pointer; no other VM's Lua runs;
--   - to a process actor, on a direct link to its process (pulsar.links),
--     made on first use;
--   - else on the link the router chooses (an actor has one link, to the
--     arbiter; the arbiter has one per actor), which relays it.
-- `receive` reads what a link delivers (core.decode_envelope), and the
-- inbox delivers envelopes read the same way, straight into the values a
-- handler takes: a reply settles the Future waiting for it; a request runs
-- its command in a task of its own (one that makes no Future unless the
-- command waits) and, when `ack` is set, answers
--   {command="callback", ack=<id>, target=<caller>, sender=<us>, result= | error=}
-- whatever the command did: an error value that cannot be shown, or a
-- reply that cannot be made, still gets an error reply naming the command.
-- A reply goes back the way its request came: on its link, or into the
-- caller's inbox. When an actor this VM has a direct route to ends, its
-- inbox's down notice fails every call waiting on it at once.
-- The arbiter installs a `forward` function that relays envelopes addressed
-- to other actors without re-encoding them (counted: counters.relayed).
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"

local M = {}

---------------------------------------------------------------------------
-- ActorProxy: what a spawn returns and what travels as extension type 2.

local Proxy = {}
Proxy.__index = Proxy
Proxy.__name = "pulsar.ActorProxy"
Proxy.__tostring = function(p) return ("ActorProxy(%s, %s)"):format(p.name, p.aid) end
debug.getregistry()["pulsar.ActorProxy"] = Proxy -- the codec looks it up

function M.proxy(aid, name, address, node)
  return setmetatable({aid = aid, name = name, address = address, node = node}, Proxy)
end

function M.is_proxy(v) return getmetatable(v) == Proxy end

---------------------------------------------------------------------------
-- State of this VM's mailbox

local me            -- this VM's Actor
local router        -- function(aid) -> link | nil, err
local forward       -- arbiter only: function(link, payload, command, target, sender, id, ack)
local pending, npending = {}, 0 -- id -> Future waiting for its reply
local next_id = 0
local commands = {} -- name -> {fn = function(request, ...), ack = boolean}
local noack = {stop = true} -- commands this VM sends without waiting
local inbox         -- this VM's inbox, in a VM that messages in its process
local routes = {}   -- target (aid or name) -> route into an inbox of this process
local links         -- pulsar.links, in an actor's VM (not the arbiter's), once used
local links_wanted  -- this VM is an actor's, which may use it
local node_suffix   -- "@NODE" on a node (docs/API.md "Nodes"), else nil
M.counters = {sent = 0, received = 0, relayed = 0}

local receive_envelope, actor_down -- defined below, called by the inbox

--- Installs the mailbox for `actor`; `route(aid)` picks the link to send
-- on; `relay` (arbiter only) forwards envelopes for other actors. A
-- thread actor or a monitor opens its inbox, so that the actors of its
-- process reach it directly. The arbiter has none: it has a link to each
-- of its actors already (the channel of a thread, the socket of a
-- process), and its own messages to and from them stay on it, in order
-- with the handshake.
function M.setup(actor, route, relay)
  me, router, forward = actor, route, relay
  node_suffix = actor.cfg and actor.cfg.node and "@" .. actor.cfg.node or nil
  if actor.kind ~= "process" and actor.kind ~= "arbiter" and not inbox then
    inbox = core.inbox_open(actor.aid, receive_envelope, actor_down)
  end
  if actor.kind ~= "arbiter" then
    links_wanted = true
    -- The arbiter's word that an actor ended: what this VM still waits
    -- for from it fails (calls the arbiter forwarded in C, which it does
    -- not track).
    M.command("pulsar:down", function(_, aid, name, how)
      M.fail_pending(aid, ("actor '%s' (%s) %s before replying"):format(tostring(name), tostring(aid), tostring(how)))
    end, {ack = false})
  end
end

-- pulsar.links, set up the first time an actor's VM sends outside its
-- process (or, in a process actor, listens): a thread actor that talks
-- only to its neighbours never loads it.
function M.links()
  if links or not links_wanted then return links end
  links = require "pulsar.links"
  links.setup {
    receive = M.receive,
    fail = M.fail_pending,
    where = function(target) return M.send("arbiter", "pulsar:where", target):wait(10) end,
    relay = function(target, payload)
      local link = router(target)
      if link then link:send(payload) end
    end,
  }
  return links
end

--- The actor's name, for the notices its inbox gives when it ends.
function M.set_name(name)
  if inbox then inbox:set_name(name) end
end

function M.close()
  if inbox then inbox:close() end
  if links then links.close() end
  inbox, links, links_wanted = nil, nil, false -- nothing more leaves this VM directly
end

-- The direct route to `target` when it lives in this process. A route
-- whose actor has ended is dropped when its down notice comes, or when a
-- post on it fails (send_request), and looked up again, so a name reaches
-- the actor that has it now.
local function direct_route(target)
  local r = routes[target]
  if r then return r end
  if not inbox then return nil end
  r = core.route(target)
  if r then routes[target] = r end
  return r
end

-- Sends payload to aid on a direct link between processes (an actor's
-- VM, not the arbiter's, which is linked to every actor already); nil and
-- nil when aid is reached through the router. The arbiter and this actor's
-- manager (a monitor, in the arbiter's process) are always reached through
-- the arbiter's link: in order with the handshake and the heartbeats.
local function send_linked(aid, payload)
  if not links_wanted or aid == "arbiter" or aid == me.manager then return end
  if M.remote_node(aid) then return end -- another node: through the arbiter
  local ok, why, resolved = M.links().send(aid, payload)
  if ok == false then return end
  return ok, why, resolved
end

-- Sends an encoded payload to aid outside this process: on its direct
-- link, else through the router.
local function send_payload(aid, payload)
  local ok, why, resolved = send_linked(aid, payload)
  if ok ~= nil or why ~= nil then return ok, why, resolved end
  local link
  link, why, resolved = router(aid)
  if not link then return nil, why end
  ok, why = link:send(payload)
  return ok, why, resolved
end

function M.pending_count() return npending end

---------------------------------------------------------------------------
-- Commands

--- Registers command `name` in this VM. With {ack = false} it sends no
-- reply, and sends of it from this VM do not wait for one.
function M.command(name, fn, opts)
  if type(name) ~= "string" or name == "" then error("command: name must be a non-empty string", 2) end
  if type(fn) ~= "function" then error("command '" .. name .. "': handler must be a function", 2) end
  local ack = not (opts and opts.ack == false)
  commands[name] = {fn = fn, ack = ack}
  noack[name] = not ack or nil
end

function M.has_command(name) return commands[name] ~= nil end

local Request = {}
Request.__index = Request
Request.__name = "pulsar.Request"

local function actor_label(actor)
  return ("actor '%s' (%s)"):format(actor.name, actor.aid)
end

-- The text of an error value; never raises, whatever its __tostring does.
local function error_text(err)
  if type(err) == "string" then return err end
  local ok, text = pcall(tostring, err)
  if ok and type(text) == "string" then return text end
  return ("an error value (%s) that cannot be shown"):format(type(err))
end

local encode_reply, decode_envelope = core.encode_reply, core.decode_envelope

-- Sends one reply on `link` (a conn, or a route into an inbox; nil: the
-- caller is in another process): true, or nil, why and whether the value
-- could not be encoded.
local function send_reply(link, id, caller, is_error, value)
  if link and link.post_reply then return link:post_reply(id, caller, me.aid, is_error, value) end
  local ok, payload = pcall(encode_reply, id, caller, me.aid, is_error, value)
  if not ok then return nil, payload, true end
  if link then return link:send(payload) end
  return send_payload(caller, payload)
end

-- Sends the reply to request `id` of `caller`, back on `link`; without one
-- (the request came into the inbox) on the caller's direct route. A result
-- that cannot be encoded or sent becomes an error reply naming `command`.
local function reply_to(link, command, id, caller, result, err)
  link = link or direct_route(caller)
  local is_error = err ~= nil
  local sent, why, unencodable = send_reply(link, id, caller, is_error, is_error and err or result)
  if sent then return end
  if unencodable or not is_error then
    send_reply(link, id, caller, true, ("%s: cannot send the result of '%s': %s"):format(
      actor_label(me), command, error_text(why)))
  end
end

--- Sends the reply to request `env` ({command=, id=, sender=}) back on
-- `link` (nil: the caller's inbox).
function M.reply(link, env, result, err)
  return reply_to(link, env.command, env.id, env.sender, result, err)
end

-- Every request with `ack` gets a reply, whatever its handler did: when
-- even building the reply fails, a fixed one naming the command goes.
local function run_command(link, cmd, command, id, caller, ack, ...)
  local request = setmetatable({actor = me, caller = caller, command = command, link = link}, Request)
  if ack and not cmd.ack then reply_to(link, command, id, caller, nil) end
  local ok, res = pcall(cmd.fn, request, ...)
  if ack and cmd.ack then
    local replied = pcall(function()
      if ok then
        reply_to(link, command, id, caller, res)
      else
        reply_to(link, command, id, caller, nil, ("%s: %s"):format(actor_label(me), error_text(res)))
      end
    end)
    if not replied then
      pcall(reply_to, link, command, id, caller, nil, ("%s: command '%s' failed and its reply could not be made"):format(
        actor_label(me), tostring(command)))
    end
  elseif not ok then
    log.error("command '%s' failed: %s", command, error_text(res))
  end
end

-- A request, as decode_envelope gives it: its command runs in a task that
-- makes no Future unless it waits (future.run).
local function dispatch(link, command, id, caller, _, ack, ...)
  M.counters.received = M.counters.received + 1
  local cmd = commands[command]
  if cmd then
    future.run(run_command, link, cmd, command, id, caller, ack, ...)
    return
  end
  if ack then
    reply_to(link, command, id, caller, nil, ("%s: unknown command '%s'"):format(actor_label(me), command))
  end
end

-- A reply, as decode_envelope gives it: settles its Future, if anyone
-- still waits for it.
local function settle(id, _, _, is_error, value)
  local f = pending[id]
  if not f then return end -- its caller gave up and the target has gone
  pending[id], npending = nil, npending - 1
  if f:done() then return end
  if is_error then f:set_exception(value) else f:set_result(value) end
end

local function handle(link, command, ...)
  if command == "callback" then return settle(...) end
  return dispatch(link, command, ...)
end

--- The node a target names ("worker@b" -> "b"), when it is not this one;
-- nil for a target on this node (or when this arbiter is not a node).
-- A plain arbiter has no nodes: there, "x@y" is just a name.
function M.remote_node(target)
  if not node_suffix or type(target) ~= "string" then return nil end
  local node = target:match("@([^@]+)$")
  if node and node_suffix ~= "@" .. node then return node end
  return nil
end

--- A target on this node without its "@NODE" ("worker@a" -> "worker" on
-- node a); any other target as it is.
function M.local_name(target)
  if node_suffix and type(target) == "string" and target:sub(-#node_suffix) == node_suffix then
    return target:sub(1, -#node_suffix - 1)
  end
  return target
end

--- Whether an envelope's target is this VM's actor.
local function is_me(target)
  if target == nil or target == me.aid then return true end
  return me.kind == "arbiter" and (target == "arbiter" or (node_suffix and target == "arbiter" .. node_suffix))
end
M.is_me = is_me

local peek_envelope = core.peek_envelope

-- An envelope an inbox delivered, as its values.
receive_envelope = function(command, ...) return handle(nil, command, ...) end

-- An actor this VM had a direct route to has ended: its calls fail now.
actor_down = function(aid, name)
  for target, r in pairs(routes) do
    if not r:alive() then routes[target] = nil end
  end
  M.fail_pending(aid, ("actor '%s' (%s) ended before replying"):format(name ~= "" and name or "?", aid))
end

local function undecodable(link, why)
  log.warning("closing a connection after an undecodable message: %s", error_text(why))
  link:close("undecodable message")
end

local function receive_decoded(link, ok, ...)
  if not ok then return undecodable(link, (...)) end
  return handle(link, ...)
end

--- Handles one payload delivered by `link`.
function M.receive(link, payload)
  if forward then -- the arbiter relays what is not for itself undecoded
    local command, target, sender, id, ack = peek_envelope(payload)
    if command and target and not is_me(target) then
      return forward(link, payload, command, target, sender, id, ack)
    end
  end
  return receive_decoded(link, pcall(decode_envelope, payload))
end

---------------------------------------------------------------------------
-- Sending

local function target_aid(target)
  if getmetatable(target) == Proxy then return target.aid end
  if type(target) == "string" and target ~= "" then
    if target == "monitor" then return me.manager or "arbiter" end
    return target
  end
  error("send: target must be an aid, an ActorProxy, 'arbiter' or 'monitor'", 3)
end

-- A command sent to this very actor runs here, without the wire.
local function call_local(command, ...)
  local cmd = commands[command]
  if not cmd then
    local f = future.Future(("'%s'"):format(command))
    f:set_exception(("%s: unknown command '%s'"):format(actor_label(me), command))
    return f
  end
  local request = setmetatable({actor = me, caller = me.aid, command = command}, Request)
  local task = future.async(cmd.fn, request, ...)
  if cmd.ack then return task end
  local f = future.Future(command)
  f:set_result(nil)
  return f
end

local encode_request = core.encode_request

-- Sends a request on the best route to aid (see the head of this file):
-- true, or nil and why; and the aid the route reaches, when known. A value
-- that cannot be encoded raises, naming it, at the caller of send or cast.
local function send_request(aid, command, id, ack, ...)
  local r = direct_route(aid)
  if r then
    local ok, why, unencodable = r:post_request(command, id, me.aid, aid, ack, ...)
    if unencodable then error(why, 3) end
    if ok then return ok, nil, r.aid end
    routes[aid] = nil -- its actor ended: a name may have a new holder
    r = direct_route(aid)
    if not r then return nil, why end
    ok, why = r:post_request(command, id, me.aid, aid, ack, ...)
    return ok, why, r.aid
  end
  local encoded, payload = pcall(encode_request, command, id, me.aid, aid, ack, ...)
  if not encoded then error(error_text(payload), 3) end
  return send_payload(aid, payload)
end

--- Sends `command` with its arguments to `target`; returns a Future of
-- the reply (resolved at once to nil for commands without reply).
function M.send(target, command, ...)
  if type(command) ~= "string" then error("send: command must be a string", 2) end
  local aid = target_aid(target)
  if is_me(aid) then return call_local(command, ...) end
  local ack = not noack[command]
  next_id = next_id + 1
  local id = next_id
  local f = future.Future(("the reply to '%s' from %s"):format(command, aid))
  -- The route may name the actor behind a name ("worker" -> its aid), so
  -- that fail_pending finds this call when that actor ends.
  local link, why, resolved = send_request(aid, command, id, ack, ...)
  if not link then
    f:set_exception(("cannot send '%s' to %s: %s"):format(command, aid, why))
    return f
  end
  M.counters.sent = M.counters.sent + 1
  if ack then
    pending[id], npending = f, npending + 1
    f._target = resolved or aid
  else
    f:set_result(nil)
  end
  return f
end

--- Sends `command` without asking for a reply (ack = false); returns true,
-- or nil and why it could not be sent.
function M.cast(target, command, ...)
  if type(command) ~= "string" then error("cast: command must be a string", 2) end
  local aid = target_aid(target)
  if is_me(aid) then call_local(command, ...) return true end
  next_id = next_id + 1
  local link, why = send_request(aid, command, next_id, false, ...)
  if not link then return nil, why end
  M.counters.sent = M.counters.sent + 1
  return true
end

--- Sends request `command` to `target` on `link` itself (the arbiter's
-- first words to another node, whose name it may not know yet); returns a
-- Future of the reply, failed by fail_pending(pending_key).
function M.send_on(link, target, pending_key, command, ...)
  next_id = next_id + 1
  local id = next_id
  local f = future.Future(("the reply to '%s' from %s"):format(command, target))
  local encoded, payload = pcall(encode_request, command, id, me.aid, target, true, ...)
  if not encoded then error(error_text(payload), 2) end
  local ok, why = link:send(payload)
  if not ok then
    f:set_exception(("cannot send '%s' to %s: %s"):format(command, target, tostring(why)))
    return f
  end
  M.counters.sent = M.counters.sent + 1
  pending[id], npending = f, npending + 1
  f._target = pending_key
  return f
end

--- Fails every Future waiting for a reply from `aid` (every one, if aid is
-- nil) with `message`.
function M.fail_pending(aid, message)
  for id, f in pairs(pending) do
    if aid == nil or f._target == aid then
      pending[id], npending = nil, npending - 1
      if not f:done() then f:set_exception(message) end
    end
  end
end

return M
