--- pulsar.mailbox: messages between actors (docs/API.md §2 "Messages and
-- commands", §3 "The mailbox protocol"; docs/DESIGN.md "Direct routes").
--
-- One mailbox per VM. `send` encodes an envelope
--   {command=, id=, sender=, target=, args={...}, ack=}
-- and hands it over on a route:
--   - from an actor to another of its process (a monitor, a thread actor),
--     straight into that VM's inbox (core.route, inbox.c): encoded once, in
--     place, and handed over by pointer; no other VM's Lua runs;
--   - to a process actor, on a direct link to its process (pulsar.links),
--     made on first use;
--   - else on the link the router chooses (an actor has one link, to the
--     arbiter; the arbiter has one per actor), which relays it.
-- `receive` decodes what a link delivers, and the inbox delivers envelopes
-- decoded: a reply settles the Future waiting for it; a request runs its
-- command in a task of its own and, when `ack` is set, answers
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

function M.proxy(aid, name, address)
  return setmetatable({aid = aid, name = name, address = address}, Proxy)
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
local links         -- pulsar.links, in an actor's VM (not the arbiter's)
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
  if actor.kind ~= "process" and actor.kind ~= "arbiter" and not inbox then
    inbox = core.inbox_open(actor.aid, receive_envelope, actor_down)
  end
  if actor.kind ~= "arbiter" and not links then
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
  end
end

--- The actor's name, for the notices its inbox gives when it ends.
function M.set_name(name)
  if inbox then inbox:set_name(name) end
end

function M.close()
  if inbox then inbox:close() end
  if links then links.close() end
  inbox = nil
end

-- The direct route to `target` when it lives in this process; a route
-- whose actor has ended is dropped and looked up again, so a name reaches
-- the actor that has it now.
local function direct_route(target)
  local r = routes[target]
  if r then
    if r:alive() then return r end
    routes[target] = nil
  end
  if not inbox then return nil end
  r = core.route(target)
  if r then routes[target] = r end
  return r
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

-- How many arguments a request carries: `n` when the sender had nils among
-- them (pack_args), else the length of the list.
local function arg_count(args) return args.n or #args end

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

local function encode_reply(env, result, err)
  local reply = {command = "callback", ack = env.id, target = env.sender, sender = me.aid}
  if err ~= nil then reply.error = err else reply.result = result end
  local ok, payload = pcall(core.encode, reply)
  if ok then return payload end
  reply.result = nil
  reply.error = ("%s: cannot send the result of '%s': %s"):format(
    actor_label(me), env.command, error_text(payload))
  return core.encode(reply)
end

--- Sends the reply to request `env` back on `link`; without one (the
-- request came by a direct route) into the caller's inbox.
function M.reply(link, env, result, err)
  link = link or direct_route(env.sender) or router(env.sender)
  if not link then return end -- the caller has gone
  local sent, why = link:send(encode_reply(env, result, err))
  if not sent and err == nil then
    link:send(encode_reply(env, nil, ("%s: cannot send the result of '%s': %s"):format(
      actor_label(me), env.command, why)))
  end
end

-- Every request with `ack` gets a reply, whatever its handler did: when
-- even building the reply fails, a fixed one naming the command goes.
local function run_command(link, env, cmd)
  local args = env.args or {}
  local request = setmetatable({actor = me, caller = env.sender, command = env.command,
                                link = link}, Request)
  if env.ack and not cmd.ack then M.reply(link, env, nil) end
  local ok, res = pcall(cmd.fn, request, table.unpack(args, 1, arg_count(args)))
  if env.ack and cmd.ack then
    local replied = pcall(function()
      if ok then
        M.reply(link, env, res)
      else
        M.reply(link, env, nil, ("%s: %s"):format(actor_label(me), error_text(res)))
      end
    end)
    if not replied then
      pcall(M.reply, link, env, nil, ("%s: command '%s' failed and its reply could not be made"):format(
        actor_label(me), tostring(env.command)))
    end
  elseif not ok then
    log.error("command '%s' failed: %s", env.command, error_text(res))
  end
end

local function dispatch(link, env)
  M.counters.received = M.counters.received + 1
  local cmd = commands[env.command]
  if cmd then
    future.run(run_command, link, env, cmd) -- a command that does not wait makes no Future
    return
  end
  if env.ack then
    M.reply(link, env, nil, ("%s: unknown command '%s'"):format(actor_label(me), env.command))
  end
end

local function settle(env)
  local f = pending[env.ack]
  if not f then return end -- its caller gave up and the target has gone
  pending[env.ack], npending = nil, npending - 1
  if f:done() then return end
  if env.error ~= nil then f:set_exception(env.error) else f:set_result(env.result) end
end

--- Whether an envelope's target is this VM's actor.
local function is_me(target)
  return target == nil or target == me.aid or (target == "arbiter" and me.kind == "arbiter")
end
M.is_me = is_me

local peek_envelope = core.peek_envelope

-- An envelope an inbox delivered, decoded already.
receive_envelope = function(env)
  if type(env) ~= "table" or type(env.command) ~= "string" then
    log.warning("dropping a message that is not an envelope from a direct route")
    return
  end
  if env.command == "callback" then return settle(env) end
  return dispatch(nil, env)
end

-- An actor this VM had a direct route to has ended: its calls fail now.
actor_down = function(aid, name)
  for target, r in pairs(routes) do
    if not r:alive() then routes[target] = nil end
  end
  M.fail_pending(aid, ("actor '%s' (%s) ended before replying"):format(name ~= "" and name or "?", aid))
end

--- Handles one payload delivered by `link`.
function M.receive(link, payload)
  if forward then -- the arbiter relays what is not for itself undecoded
    local command, target, sender, id, ack = peek_envelope(payload)
    if command and target and not is_me(target) then
      return forward(link, payload, command, target, sender, id, ack)
    end
  end
  local ok, env = pcall(core.decode, payload, true)
  if not ok or type(env) ~= "table" or type(env.command) ~= "string" then
    log.warning("closing a connection after an undecodable message: %s",
                ok and "not an envelope" or error_text(env))
    link:close("undecodable message")
    return
  end
  if env.command == "callback" then return settle(env) end
  return dispatch(link, env)
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

-- The argument list of a request. With a nil among the arguments it is not
-- a sequence, so it carries its count as `n` and every nil, trailing ones
-- included, arrives in place.
local function pack_args(...)
  local n = select("#", ...)
  if n == 0 then return nil end
  local args = {...}
  for i = 1, n do
    if args[i] == nil then
      args.n = n
      break
    end
  end
  return args
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

-- Sends payload to aid on a direct link between processes (an actor's
-- VM, not the arbiter's, which is linked to every actor already); nil and
-- nil when aid is reached through the router.
local function send_linked(aid, payload)
  if not links or aid == "arbiter" then return end
  local ok, why, resolved = links.send(aid, payload)
  if ok == false then return end
  return ok, why, resolved
end

local function encode_error(why, level)
  error((error_text(why):gsub("value%.args", "args")), level + 1)
end

local function encode_request(env)
  local ok, payload = pcall(core.encode, env)
  if ok then return payload end
  encode_error(payload, 3)
end

-- Posts env on the direct route to aid, if there is one: true, or nil and
-- why, and the aid it reached; nothing when aid is not in this process. A
-- route whose actor ended since is looked up once more (a name may have a
-- new holder).
local function post_direct(aid, env)
  local r = direct_route(aid)
  if not r then return end
  local ok, why, unencodable = r:post(env)
  if unencodable then encode_error(why, 3) end
  if not ok then
    routes[aid] = nil
    r = direct_route(aid)
    if not r then return nil, why end
    ok, why = r:post(env)
  end
  return ok, why, r.aid
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
  local env = {command = command, id = id, sender = me.aid, target = aid,
               args = pack_args(...), ack = ack}
  local f = future.Future(("the reply to '%s' from %s"):format(command, aid))
  -- The route may name the actor behind a name ("worker" -> its aid), so
  -- that fail_pending finds this call when that actor ends.
  local link, why, resolved = post_direct(aid, env)
  if link == nil and why == nil then
    local payload = encode_request(env)
    link, why, resolved = send_linked(aid, payload)
    if link == nil and why == nil then
      link, why, resolved = router(aid)
      if link then link, why = link:send(payload) end
    end
  end
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
  local env = {command = command, id = next_id, sender = me.aid, target = aid,
               args = pack_args(...), ack = false}
  local link, why = post_direct(aid, env)
  if link == nil and why == nil then
    local payload = encode_request(env)
    link, why = send_linked(aid, payload)
    if link == nil and why == nil then
      link, why = router(aid)
      if link then link, why = link:send(payload) end
    end
  end
  if not link then return nil, why end
  M.counters.sent = M.counters.sent + 1
  return true
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
