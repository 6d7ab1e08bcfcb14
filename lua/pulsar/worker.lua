--- pulsar.worker: the life of an actor other than the arbiter.
--
-- A process, thread or monitor actor starts here (host.lua's actor_main):
-- it reaches the arbiter (a Unix socket for a process, a channel it is
-- handed otherwise), says hello and receives its parameters, runs its start
-- hook, reports itself started, then sends heartbeats until it stops, by a
-- `stop` command, a signal, os.exit, or the loss of its link to the arbiter.
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

local M = {}

-- The heartbeat (API.md §2 Hooks; DESIGN.md "Time and supervision"):
-- notify the manager every clamp(0.3 * timeout, floor, 30) seconds, then
-- run periodic_task.
local function notify_interval(cfg)
  local floor = cfg.notify_floor or 3
  return math.max(floor, math.min(0.3 * (cfg.timeout or 30), 30))
end

local function start_heartbeat(a, mailbox)
  local every = a.kind == "monitor" and (a.cfg.tick or 5) or notify_interval(a.cfg)
  local function beat()
    if a.state ~= "running" then return end
    a.next_periodic_task = core.now() + every
    pcall(function() mailbox.send("monitor", "notify", a:info()):wait(every) end)
    if a.state == "running" then a:_fire("periodic_task") end
  end
  a.next_periodic_task = core.now() + every
  a._heartbeat = core.timer(every, function() future.async(beat) end, every)
end

-- Applies the parameters the arbiter sent in reply to hello.
local function apply_spec(a, spec, mailbox)
  local pulsar = require "pulsar"
  a.name, a.address, a.manager = spec.name, spec.address, spec.manager or "arbiter"
  a.kind = spec.kind
  require("pulsar.log").set_actor_name(spec.name)
  core.set_name(spec.name)
  package.path, package.cpath = spec.path or package.path, spec.cpath or package.cpath
  for k in pairs(pulsar.cfg) do pulsar.cfg[k] = nil end
  for k, v in pairs(spec.cfg or {}) do pulsar.cfg[k] = v end
  a.cfg = pulsar.cfg
  local mod = spec.module and require(spec.module) or {}
  for _, hook in ipairs(actor.HOOKS) do a.hooks[hook] = spec.hooks[hook] or mod[hook] end
  for name, fn in pairs(mod.commands or {}) do mailbox.command(name, fn) end
  for name, fn in pairs(spec.commands or {}) do mailbox.command(name, fn) end
  for key, value in pairs(spec.fields or {}) do a[key] = value end
end

local function start_actor(a, mailbox)
  local spec = mailbox.send("arbiter", "pulsar:hello"):wait()
  apply_spec(a, spec, mailbox)
  local ok, err = a:_fire("start")
  if not ok then
    pcall(function() mailbox.send("arbiter", "pulsar:start_failed", tostring(err)):wait(5) end)
    a:stop(1)
    return
  end
  a.state = "running"
  mailbox.send("arbiter", "pulsar:started", a:info()):wait()
  start_heartbeat(a, mailbox)
end

--- The body of a process, thread or monitor actor: connect, handshake,
-- serve until stopped or until the arbiter goes away.
function M.main(request)
  local mailbox = require "pulsar.mailbox"
  local a = actor.new {aid = request.aid, name = "actor", kind = request.kind}
  a.state = "starting"
  _G.pulsar = require "pulsar"
  require("pulsar.commands").install()
  local link
  a._close = function(self)
    if self._heartbeat then self._heartbeat:cancel() end
    if link then link:close("actor stopped") end
  end
  a._on_closed = function(self) core.exit_loop(self.exit_code) end
  local function begin(conn)
    link = conn
    mailbox.setup(a, function() return link end)
    link:set_handler(function(payload) mailbox.receive(link, payload) end, function(reason)
      mailbox.fail_pending(nil, "the connection to the arbiter closed (" .. tostring(reason) .. ")")
      link = nil
      if a.state ~= "stopping" and a.state ~= "closed" then a:stop(a.state == "running" and 0 or 1) end
    end)
    local task = future.async(start_actor, a, mailbox)
    task:add_done_callback(function(f)
      if f:exception() ~= nil then
        require("pulsar.log").error("could not start: %s", f:traceback() or f:exception())
        a:stop(1)
      end
    end)
  end
  -- libuv hands a signal to every loop that watches it: only the arbiter
  -- and process actors watch, a thread actor is stopped by its arbiter.
  -- Ctrl-C reaches the whole process group: the arbiter stops its actors in
  -- order, so a process actor leaves SIGINT to it.
  if request.kind == "process" then
    core.on_signal(function(signum) if signum ~= 2 then a:stop(signum) end end)
  end
  -- os.exit stops this actor only (in a thread actor the real one would
  -- end the whole process).
  os.exit = function(code)
    if code == nil or code == true then code = 0 elseif code == false then code = 1 end
    a:stop(math.tointeger(code) or 1)
    if future.current_task() and coroutine.isyieldable() then future.park() end
  end
  if request.conn then
    begin(request.conn)
  else
    core.connect(request.address, function(conn, err)
      if conn then return begin(conn) end
      io.stderr:write("pulsar-lua actor: cannot reach the arbiter: ", tostring(err), "\n")
      core.exit_loop(1)
    end)
  end
  return 0
end


return M
