--- pulsar.host: what the C host calls in a new VM (host.c, spawn.c).
--
-- main(request) makes the arbiter, runs the -e and -l actions and the script
-- in one task (the main coroutine), and opens the REPL after it when asked;
-- with --attach it is a console of another arbiter instead (pulsar.attach).
-- The host then runs the loop; loop_ended() gives the exit status when the
-- loop ran out of work without anyone asking to stop. actor_main(request)
-- is the body of every other actor (pulsar.worker).
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

local M = {}

local main_task
local LoadError = {} -- marks an error that gets one line, no traceback
LoadError.__index = LoadError
LoadError.__tostring = function(e) return e.message end

local function load_failure(message)
  error(setmetatable({message = message}, LoadError), 0)
end

local function run_action(action)
  if action.kind == "e" then
    local chunk, err = load(action.text, "=(command line)")
    if not chunk then load_failure(err) end
    chunk()
  else -- "l": require NAME, set global NAME
    local ok, mod = pcall(require, action.text)
    if not ok then load_failure(mod) end
    _G[action.text] = mod
  end
end

local function load_script(path)
  local chunk, err = loadfile(path ~= "-" and path or nil)
  if not chunk then load_failure(err) end
  return chunk
end

local function run_main(request)
  for _, action in ipairs(request.actions) do run_action(action) end
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

-- On a terminal, the REPL owns SIGINT (Ctrl-C clears the line or cancels
-- the line being evaluated; pulsar.repl sets core.on_interrupt) and shows
-- output from anywhere above its prompt. That output is captured from the
-- start (capture_output), so that actors a script spawns before the prompt
-- write through it too.
local function terminal_repl(request)
  return request.interactive and request.stdin_is_tty and core.isatty(1)
end

local function capture_output(request)
  if terminal_repl(request) and core.lineedit_capture then
    local ok, err = pcall(core.lineedit_capture)
    if not ok then io.stderr:write("pulsar-lua: ", tostring(err), "\n") end
  end
end

local function start_repl(banner)
  local repl = require "pulsar.repl"
  if banner then
    local v = core.versions()
    io.write(("pulsar-lua %s (%s, libuv %s)\n"):format(v.pulsar, v.lua, v.libuv))
    io.flush()
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
local function start_ticks(arbiter)
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
  if core.config().attach then return require("pulsar.attach").main(request) end -- a console
  settle_request(request)
  local cfg = core.config()
  local arbiter = actor.new {name = "arbiter", kind = "arbiter", cfg = cfg,
                             role = require("pulsar.arbiter").role}
  require("pulsar.commands").install()
  local ok, err = pcall(require("pulsar.arbiter").setup, arbiter)
  if not ok then -- such as a mailbox that cannot listen: one line
    io.stderr:write("pulsar-lua: ", tostring(err), "\n")
    return 1
  end
  arbiter.state = "running"
  start_ticks(arbiter)
  core.on_signal(function(signum) arbiter:stop(signum) end)
  os.exit = function(code) return arbiter_exit(arbiter, code) end
  _G.pulsar = require "pulsar"
  capture_output(request)
  main_task = future.async(run_main, request)
  main_task.label = "the main chunk"
  main_task:add_done_callback(function(f) main_done(request, f) end)
  return 0
end

--- The body of a process, thread or monitor actor (lua/pulsar/worker.lua).
function M.actor_main(request) return require("pulsar.worker").main(request) end

function M.loop_ended()
  if main_task and not main_task:done() then
    io.stderr:write("pulsar-lua: the main chunk waits for a future that ",
                    "nothing left can complete\n")
    return 1
  end
  return require("pulsar.arbiter").exit_status() -- 1 when an application gave up
end

return M
