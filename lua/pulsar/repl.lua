--- pulsar.repl: the REPL's front-end, in the arbiter, driven by the loop.
--
--   require("pulsar.repl").start([session])
--
-- It reads lines and shows what a session (pulsar.repl_session: local by
-- default, or one that evaluates in another process) makes of them. It only
-- ever calls session:eval(source) and session:complete(line) inside tasks,
-- and session:cancel(), so a session over the wire works the same.
--
-- On a terminal (stdin and stdout both), lines are edited with readline
-- through the host's line editor (lineedit.c): prompts `> ` and `>> ` (an
-- unfinished statement), history, tab completion; output from anywhere in
-- the process shows above the prompt; Ctrl-C clears the typed line, or
-- cancels the line being evaluated; Ctrl-D on an empty line stops the
-- arbiter. Anywhere else (a pipe, a file) lines are read as they come and
-- run in order, with no prompts and no escape codes, so that scripts and
-- tests can drive it.
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

-- Taken at load: a line may remove the standard globals (string = nil).
local _G, io, math, table = _G, io, math, table
local ipairs, pcall, setmetatable, tostring, type = ipairs, pcall, setmetatable, tostring, type

local M = {}

local function report(err)
  io.stderr:write(tostring(err), "\n")
  io.stderr:flush()
end

--- Shows an evaluation's outcome; returns the source still unfinished.
local function show(result, source)
  if result.status == "incomplete" then return source end
  if result.status == "ok" and result.text then
    io.stdout:write(result.text, "\n")
    io.stdout:flush()
  elseif result.status == "error" then
    report(result.text)
  end
  return nil
end

-- Runs `source` through the session in a task; done(unfinished) once shown.
local function evaluate(session, source, done)
  local task = future.async(function() return show(session:eval(source), source) end)
  task:add_done_callback(function(f)
    if f:exception() ~= nil then report(f:traceback() or f:exception()) end
    done(f:exception() == nil and f:result() or nil)
  end)
end

---------------------------------------------------------------------------
-- Pipe mode

local function start_pipe(session, opts)
  local lines, busy, ended, partial, pending = {}, false, false, "", nil

  local pump
  local function run_line(line)
    busy = true
    evaluate(session, pending and pending .. "\n" .. line or line, function(unfinished)
      pending = unfinished
      busy = false
      pump()
    end)
  end

  function pump()
    while not busy and #lines > 0 do run_line(table.remove(lines, 1)) end
    if ended and not busy and #lines == 0 then opts.on_end() end
  end

  core.read_stdin(function(data)
    if data == nil then
      ended = true
      if partial ~= "" then lines[#lines + 1] = partial; partial = "" end
    else
      partial = partial .. data
      local rest = 1
      for line, after in partial:gmatch("([^\n]*)\n()") do
        lines[#lines + 1] = line:gsub("\r$", "")
        rest = after
      end
      partial = partial:sub(rest)
    end
    pump()
  end)
end

---------------------------------------------------------------------------
-- Terminal mode

--- The candidates replace the session's word ending `line`; readline
-- replaces its own word, from `start` (0-based). Each candidate is laid
-- over the longest end of the line it continues, then cut at `start`.
local function as_matches(line, start, candidates)
  local out = {}
  for _, c in ipairs(candidates) do
    local k = math.min(#line, #c)
    while k > 0 and line:sub(#line - k + 1) ~= c:sub(1, k) do k = k - 1 end
    local full = line:sub(1, #line - k) .. c
    if full:sub(1, start) == line:sub(1, start) then out[#out + 1] = full:sub(start + 1) end
  end
  return out
end

local function start_terminal(session, opts)
  local pending, busy, stopped = nil, false, false
  local late = {} -- a completion that came back after readline asked

  -- As lua.c's REPL: the globals _PROMPT and _PROMPT2, through tostring,
  -- else "> " and ">> ".
  local function prompt()
    local name, default = "_PROMPT", "> "
    if pending then name, default = "_PROMPT2", ">> " end
    local ok, value = pcall(function() return _G[name] end)
    if not ok or value == nil then return default end
    local shown, text = pcall(tostring, value)
    return shown and type(text) == "string" and text or default
  end

  local function stop()
    if stopped then return end
    stopped = true
    core.on_interrupt(nil)
    core.lineedit_stop()
    opts.on_end()
  end

  local function on_line(line)
    if line == nil then return stop() end
    late = {}
    busy = true
    evaluate(session, pending and pending .. "\n" .. line or line, function(unfinished)
      pending = unfinished
      busy = false
      if not stopped then core.lineedit_read(prompt()) end
    end)
  end

  -- Completion runs in a task, so a session may wait for its answer; if
  -- it does, readline gets nothing now and is asked again once it came.
  local function complete(line, start)
    if late.line == line then return as_matches(line, start, late.candidates) end
    local task = future.async(session.complete, session, line)
    if task:done() then
      if task:exception() ~= nil then return {} end
      return as_matches(line, start, task:result() or {})
    end
    task:add_done_callback(function(f)
      if stopped or f:exception() ~= nil then return end
      late = {line = line, candidates = f:result() or {}}
      core.lineedit_complete_again()
    end)
    return {}
  end

  local function on_interrupt()
    if core.lineedit_interrupted() then return end -- a line stuck in Lua got it
    if busy then
      future.async(session.cancel, session)
    else
      pending = nil
      core.lineedit_clear_line(prompt())
    end
  end

  core.lineedit_start {prompt = prompt(), on_line = on_line, complete = complete,
                       history = opts.history}
  core.on_interrupt(on_interrupt)
end

--- Opens the REPL on `session` (default: a local one). Options:
--   history   the history file on a terminal (false: none; by default
--             $PULSAR_HISTORY, else ~/.pulsar-lua/history)
--   on_end    called at the end of input (Ctrl-D); by default the actor
--             running the REPL (the arbiter) stops with status 0
function M.start(session, opts)
  session = session or require("pulsar.repl_session").new()
  opts = setmetatable({}, {__index = opts or {}})
  -- (with a signal's status if one interrupted the last line: the loop
  -- takes that signal only after input has ended)
  opts.on_end = opts.on_end or function() actor.current():stop(core.interrupted_by() or 0) end
  -- lineedit_capture says whether stdout is a terminal (or was, before the
  -- capture made it a pipe), starting the capture if it is not on yet.
  if core.isatty(0) and core.lineedit_capture and core.lineedit_capture() then
    start_terminal(session, opts)
  else
    start_pipe(session, opts)
  end
end

return M
