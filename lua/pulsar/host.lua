--- pulsar.host: what the C host calls in the arbiter's VM (host.c).
--
-- main(request) makes the arbiter, runs the -e and -l actions and the script
-- in one task (the main coroutine), and opens the REPL after it when asked.
-- The host then runs the loop; loop_ended() gives the exit status when the
-- loop ran out of work without anyone asking to stop.
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

local M = {}

local main_task
local start_ticks
local LoadError = {} -- marks an error that gets one line, no traceback
LoadError.__index = LoadError
LoadError.__tostring = function(e) return e.message end

local function load_failure(message)
  error(setmetatable({message = message}, LoadError), 0)
end

local function run_action(action, pulsar)
  if action.kind == "e" then
    local chunk, err = load(action.text, "=(command line)")
    if not chunk then load_failure(err) end
    chunk()
  else -- "l": require NAME, set global NAME
    local ok, mod = pcall(require, action.text)
    if not ok then load_failure(mod) end
    _G[action.text] = mod
  end
  return pulsar
end

local function load_script(path)
  local chunk, err = loadfile(path ~= "-" and path or nil)
  if not chunk then load_failure(err) end
  return chunk
end

local function run_main(request)
  local pulsar = require "pulsar"
  for _, action in ipairs(request.actions) do run_action(action, pulsar) end
  if request.script then
    local chunk = load_script(request.script)
    local args = request.args or {}
    return chunk(table.unpack(args, 1, #args))
  end
end

local function report_failure(f)
  local err = f:exception()
  if getmetatable(err) == LoadError then
    io.stderr:write("pulsar-lua: ", err.message, "\n")
  else
    io.stderr:write("pulsar-lua: ", f:traceback() or tostring(err), "\n")
  end
  io.stderr:flush()
end

local function start_repl(banner)
  local repl = require "pulsar.repl"
  if banner then
    local v = core.versions()
    io.write(("pulsar-lua %s (%s, libuv %s)\n"):format(v.pulsar, v.lua, v.libuv))
  end
  repl.start()
end

local function main_done(request, f)
  if f:exception() ~= nil then
    report_failure(f)
    actor.current():stop(1)
  elseif request.interactive then
    start_repl(request.banner)
  end
end

--- Decides what a command line with no script means, as lua does: a
-- terminal gets the REPL, anything else is read as the script.
local function settle_request(request)
  if request.script or #request.actions > 0 or request.interactive then return end
  if request.stdin_is_tty then
    request.interactive, request.banner = true, not request.show_version
  else
    request.script = "-"
  end
end

-- The arbiter's tick, every `tick` seconds (default 5, read anew each
-- time): silent actors are stopped, then periodic_task runs. It does not keep
-- the arbiter alive on its own.
start_ticks = function(arbiter)
  local supervisor = require "pulsar.arbiter"
  local function schedule()
    local every = arbiter.cfg.tick or 5
    arbiter.next_periodic_task = core.now() + every
    core.timer(every, function()
      if arbiter.state ~= "running" then return end
      supervisor.check_silent(core.now())
      future.async(function() arbiter:_fire("periodic_task") end)
      schedule()
    end):unref()
  end
  schedule()
end

local real_exit = os.exit

--- os.exit in the arbiter stops it gracefully (stopping hooks, handles
-- closed) with the status Lua's os.exit would give. From inside a task it
-- does not return; elsewhere it cannot wait and exits at once.
local function arbiter_exit(arbiter, code)
  if code == nil or code == true then code = 0 elseif code == false then code = 1 end
  if type(code) ~= "number" then error("os.exit: bad status", 2) end
  if not (future.current_task() and coroutine.isyieldable()) then
    io.stdout:flush()
    real_exit(code, true)
  end
  arbiter:stop(math.tointeger(code) or 1)
  future.park()
end

function M.main(request)
  settle_request(request)
  local cfg = core.config()
  local arbiter = actor.new {name = "arbiter", kind = "arbiter", cfg = cfg}
  require("pulsar.commands").install()
  require("pulsar.arbiter").setup(arbiter)
  arbiter.state = "running"
  arbiter._on_closed = function(a) core.exit_loop(a.exit_code) end
  start_ticks(arbiter)
  core.on_signal(function(signum) arbiter:stop(signum) end)
  os.exit = function(code) return arbiter_exit(arbiter, code) end
  _G.pulsar = require "pulsar"
  main_task = future.async(run_main, request)
  main_task.label = "the main chunk"
  main_task:add_done_callback(function(f) main_done(request, f) end)
  return 0
end

---------------------------------------------------------------------------
-- Process and thread actors

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

-- The body of a process or a thread actor: connect, handshake, serve until
-- stopped or until the arbiter goes away.
function M.actor_main(request)
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

function M.loop_ended()
  if main_task and not main_task:done() then
    io.stderr:write("pulsar-lua: the main chunk waits for a future that ",
                    "nothing left can complete\n")
    return 1
  end
  return 0
end

return M
