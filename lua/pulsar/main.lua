--- pulsar.main: the arbiter's life, as pulsar.host hands it over (only
-- the arbiter's VM loads this module).
--
-- main(request) makes the arbiter, runs the -e and -l actions and the script
-- in one task (the main coroutine), and opens the REPL after it when asked;
-- with --attach it is a console of another arbiter instead (pulsar.attach).
-- The host then runs the loop; loop_ended() gives the exit status when the
-- loop ran out of work without anyone asking to stop.
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

-- A script may remove or replace any standard global (debug = nil,
-- string = nil): what this file needs to run it and report its errors is
-- taken now, while the globals are still the standard ones.
local coroutine, debug, io, math, os, table = coroutine, debug, io, math, os, table
local error, getmetatable, ipairs, load, loadfile, pcall, require, setmetatable, tostring, type =
  error, getmetatable, ipairs, load, loadfile, pcall, require, setmetatable, tostring, type
local _G, getenv = _G, os.getenv
local stderr, stdout = io.stderr, io.stdout

local M = {}

local main_task
local LoadError = {} -- marks an error that gets one line, no traceback
LoadError.__index = LoadError
LoadError.__tostring = function(e) return e.message end

local function load_failure(message)
  error(setmetatable({message = message}, LoadError), 0)
end

local function run_string(text, chunkname)
  local chunk, err = load(text, chunkname)
  if not chunk then load_failure(err) end
  chunk()
end

-- -l NAME requires NAME into global NAME; -l G=NAME into global G, as
-- lua.c 5.4 does.
-- A module that fails is reported with its traceback, as lua.c does; the
-- call through pcall keeps this file's position out of the message.
local function require_into_global(spec)
  local global, name = spec:match("^(.-)=(.*)$")
  if not global then global, name = spec, spec end
  local ok, mod = pcall(require, name)
  if not ok then error(mod, 0) end
  _G[global] = mod
end

local function run_action(action)
  if action.kind == "e" then run_string(action.text, "=(command line)")
  else require_into_global(action.text) end
end

local function load_script(path)
  local chunk, err = loadfile(path ~= "-" and path or nil)
  if not chunk then load_failure(err) end
  return chunk
end

-- LUA_INIT_5_4, else LUA_INIT: a chunk, or @FILE, run before anything on
-- the command line, as lua.c runs it (-E: not at all).
local function run_lua_init(request)
  if request.ignore_env then return end
  local name, init = "LUA_INIT_5_4", getenv("LUA_INIT_5_4")
  if init == nil then name, init = "LUA_INIT", getenv("LUA_INIT") end
  if init == nil then return end
  if init:sub(1, 1) == "@" then load_script(init:sub(2))()
  else run_string(init, "=" .. name) end
end

-- --observer: the web observer listens before the script runs, and one that
-- cannot is the end, in one line, as a mailbox that cannot listen.
local function start_observer()
  local bind = core.config().observer
  if not bind then return end
  local ok, err = pcall(function() return require("pulsar.observer").start{bind = bind}:wait() end)
  if not ok then load_failure(tostring(err)) end
end

-- --join and --cluster: a node links to the cluster before its script
-- runs, so that the script finds its peers linked. A name taken, or Redis
-- that cannot be reached, is the end, in one line.
local function join_cluster()
  local cfg = core.config()
  if not cfg.node then return end
  local nodes = require "pulsar.nodes"
  local ok, err = pcall(function()
    if cfg.cluster then nodes.join_cluster(cfg.cluster) end
    if cfg.join then nodes.join(cfg.join) end
  end)
  if not ok then load_failure(tostring(err)) end
end

local function run_main(request)
  join_cluster()
  start_observer()
  run_lua_init(request)
  for _, action in ipairs(request.actions) do run_action(action) end
  if request.script then
    local chunk = load_script(request.script)
    local args = request.args or {}
    return chunk(table.unpack(args, 1, #args))
  end
end

-- What lua.c's message handler makes of an error object: a string or a
-- number with the traceback; an object whose __tostring gives a string,
-- that string alone; anything else is named by its type, with the traceback
-- (future.lua's tracebacks start with that name).
local function failure_text(f)
  local err = f:exception()
  if getmetatable(err) == LoadError then return err.message end
  local kind = type(err)
  if kind ~= "string" and kind ~= "number" then
    local mt = debug.getmetatable(err)
    if mt and mt.__tostring then
      local ok, text = pcall(mt.__tostring, err)
      if ok and type(text) == "string" then return text end
    end
  end
  return f:traceback() or ("(error object is a %s value)"):format(kind)
end

local function report_failure(f)
  stderr:write("pulsar-lua: ", failure_text(f), "\n")
  stderr:flush()
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
  if f:failed() then
    report_failure(f)
    -- Ended by a signal's interrupt ("interrupted!"): the signal's status.
    actor.current():stop(core.interrupted_by() or 1)
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
-- does not return; elsewhere it cannot wait and exits at once. With close
-- true, as lua closes its state, the task's pending to-be-closed variables
-- are closed first: the task is parked, then closed from the ready queue,
-- and the stop follows.
local function arbiter_exit(arbiter, code, close)
  if code == nil or code == true then code = 0 elseif code == false then code = 1 end
  if type(code) ~= "number" then error("os.exit: bad status", 2) end
  if not (future.current_task() and coroutine.isyieldable()) then
    stdout:flush()
    real_exit(code, true)
  end
  local status = math.tointeger(code) or 1
  if close then
    local co = coroutine.running()
    future.call_soon(function()
      coroutine.close(co)
      arbiter:stop(status)
    end)
  else
    arbiter:stop(status)
  end
  future.park()
end

function M.main(request)
  if core.config().attach then return require("pulsar.attach").main(request) end -- a console
  settle_request(request)
  local cfg = core.config()
  local aid = cfg.node and core.random_id() .. "@" .. cfg.node or nil -- one name in a cluster
  local arbiter = actor.new {aid = aid, name = "arbiter", kind = "arbiter", cfg = cfg,
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
  os.exit = function(code, close) return arbiter_exit(arbiter, code, close) end
  _G.pulsar = require "pulsar"
  capture_output(request)
  main_task = future.async(run_main, request)
  main_task.label = "the main chunk"
  main_task:add_done_callback(function(f) main_done(request, f) end)
  return 0
end

function M.loop_ended()
  if main_task and not main_task:done() then
    io.stderr:write("pulsar-lua: the main chunk waits for a future that ",
                    "nothing left can complete\n")
    return 1
  end
  return require("pulsar.arbiter").exit_status() -- 1 when an application gave up
end

return M
