--- pulsar.worker: the life of an actor other than the arbiter, and its role.
--
-- A process, thread or monitor actor starts here (host.lua's actor_main):
-- it reaches the arbiter (a Unix socket for a process, a channel it is
-- handed otherwise), says hello and receives its parameters, runs its start
-- hook, reports itself started (with its first heartbeat), then
-- sends a heartbeat every interval until it stops, by a `stop` command, a
-- signal, os.exit, a failed heartbeat or periodic_task, or the loss of its
-- link to the arbiter. M.role is what such an actor is made with (see the
-- head of pulsar.actor).
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"
local log = require "pulsar.log"

local M = {}

local link      -- this VM's link to the arbiter
local heartbeat -- its timer

-- The heartbeat (docs/API.md §2 Hooks; docs/DESIGN.md "Time and supervision"):
-- notify the manager every clamp(0.3 * timeout, floor, 30) seconds, then
-- run periodic_task.
local function notify_interval(cfg)
  local floor = cfg.notify_floor or 3
  return math.max(floor, math.min(0.3 * (cfg.timeout or 30), 30))
end

-- One notify to the manager, waited for at most `within` seconds. A failure
-- is logged once per streak of failures; when none has been answered for
-- `timeout` seconds the actor stops itself with exit code 1: its manager
-- has declared it silent anyway.
local function notify(a, mailbox, beat, within, sent)
  sent = sent or mailbox.send("monitor", "notify", a:info())
  local ok, err = pcall(sent.wait, sent, within)
  local now = core.now()
  if ok then
    if beat.failing then log.info("heartbeat: %s answers again", a.manager) end
    beat.failing, beat.answered = false, now
    return true
  end
  if not beat.failing then
    beat.failing = true
    log.warning("heartbeat: the notify to %s failed: %s", a.manager, tostring(err))
  end
  local timeout = a.cfg.timeout or 30
  if now - beat.answered >= timeout and a.state == "running" then
    log.error("heartbeat: no notify answered for %.1f s (timeout %g s): stopping", now - beat.answered, timeout)
    a:stop(1)
  end
  return false
end

local function start_heartbeat(a, mailbox, beat)
  local every = a.kind == "monitor" and (a.cfg.tick or 5) or notify_interval(a.cfg)
  local function tick()
    if a.state ~= "running" or beat.busy then return end
    beat.busy = true
    a.next_periodic_task = core.now() + every
    notify(a, mailbox, beat, every)
    if a.state == "running" and not a:_fire("periodic_task") then
      log.error("periodic_task failed: stopping")
      a:stop(1)
    end
    beat.busy = false
  end
  a.next_periodic_task = core.now() + every
  heartbeat = core.timer(every, function() future.async(tick) end, every)
  return every
end

-- Applies the parameters the arbiter sent in reply to hello.
local function apply_spec(a, spec, mailbox)
  local pulsar = require "pulsar"
  a.name, a.unique_name, a.address = spec.name, spec.unique_name, spec.address
  a.manager, a.kind = spec.manager or "arbiter", spec.kind
  log.set_actor_name(spec.unique_name or spec.name)
  core.set_name(spec.unique_name or spec.name)
  mailbox.set_name(spec.name)
  package.path, package.cpath = spec.path or package.path, spec.cpath or package.cpath
  for k in pairs(pulsar.cfg) do pulsar.cfg[k] = nil end
  for k, v in pairs(spec.cfg or {}) do pulsar.cfg[k] = v end
  a.cfg = pulsar.cfg
  -- Without max_memory a thread keeps its default limit (1 GiB), others none.
  if a.cfg.max_memory ~= nil then core.set_memory_limit(a.cfg.max_memory) end
  local mod = spec.module and require(spec.module) or {}
  for _, hook in ipairs(actor.HOOKS) do a.hooks[hook] = spec.hooks[hook] or mod[hook] end
  for name, fn in pairs(mod.commands or {}) do mailbox.command(name, fn) end
  for name, fn in pairs(spec.commands or {}) do mailbox.command(name, fn) end
  for key, value in pairs(spec.fields or {}) do a[key] = value end
end

local function start_actor(a, mailbox)
  -- A process actor says where other actors reach it directly.
  local direct = a.kind == "process" and mailbox.links().listen() or nil
  local spec = mailbox.send("arbiter", "pulsar:hello", direct):wait()
  apply_spec(a, spec, mailbox)
  local ok, err = a:_fire("start")
  if not ok then
    pcall(function() mailbox.send("arbiter", "pulsar:start_failed", tostring(err)):wait(5) end)
    a:stop(1)
    return
  end
  if a.state ~= "starting" then return end -- stopped while its start hook ran
  a.state = "running"
  -- The manager knows this actor's info (its pid) by the time its spawn
  -- resolves: a monitor from a first notify, sent just before; the arbiter
  -- from `pulsar:started` itself, which is its first heartbeat too. Both
  -- leave before this task yields, so nothing the actor's loop runs (a
  -- server that serves its max_requests at once) can end the actor before
  -- it has reported itself started; and an actor of the arbiter's starts in
  -- one round trip (hello) and a cast.
  local beat = {answered = core.now(), failing = false, busy = true}
  local every = start_heartbeat(a, mailbox, beat)
  local info = a:info()
  local first = a.manager ~= "arbiter" and mailbox.send("monitor", "notify", info) or nil
  mailbox.cast("arbiter", "pulsar:started", info)
  if first then notify(a, mailbox, beat, math.min(every, 5), first) end
  beat.busy = false
end

---------------------------------------------------------------------------
-- The role of a process, thread or monitor actor (see pulsar.actor)

M.role = {}

-- Tells the arbiter this actor is stopping: it ends the actor by force if
-- it is not gone within exit_timeout and a margin.
function M.role.on_stop()
  if link then require("pulsar.mailbox").send("arbiter", "pulsar:stopping"):wait(1) end
end

function M.role.close()
  if heartbeat then heartbeat:cancel() end
  require("pulsar.mailbox").close() -- its direct routes end with it
  if link then link:close("actor stopped") end
end

function M.role.on_closed(a) core.exit_loop(a.exit_code) end

--- The body of a process, thread or monitor actor: connect, handshake,
-- serve until stopped or until the arbiter goes away.
function M.main(request)
  local mailbox = require "pulsar.mailbox"
  local role = M.role
  if request.kind == "monitor" then role = require("pulsar.monitor").role end
  local a = actor.new {aid = request.aid, name = "actor", kind = request.kind, role = role}
  a.state = "starting"
  _G.pulsar = require "pulsar"
  require("pulsar.commands").install()
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
        log.error("could not start: %s", f:traceback() or f:exception())
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
