--- pulsar.repl: a line-by-line REPL in the arbiter, driven by the loop.
--
-- Lines are read from stdin without blocking the loop, so actors and timers
-- keep running while it waits. Each line runs in its own task, in order; an
-- expression's values are printed (the line is tried as `return <line>`
-- first), a Future left as the value is awaited, an incomplete statement
-- continues on the next line. Prompts are shown only on a terminal.
local core = require "pulsar.core"
local future = require "pulsar.future"
local actor = require "pulsar.actor"

local M = {}

local function write_prompt(tty, continuing)
  if tty then
    io.write(continuing and ">> " or "> ")
    io.flush()
  end
end

local function report(err)
  io.stderr:write(tostring(err), "\n")
  io.stderr:flush()
end

function M.start(session)
  session = session or require("pulsar.repl_session").new()
  local tty = core.isatty(0)
  local lines, busy, ended, partial, pending = {}, false, false, "", nil

  local pump
  local function run_line(line)
    local source = pending and pending .. "\n" .. line or line
    busy = true
    local task = future.async(function()
      local result = session:eval(source)
      pending = result.status == "incomplete" and source or nil
      if result.status == "ok" and result.text then print(result.text) end
      if result.status == "error" then report(result.text) end
    end)
    task:add_done_callback(function(f)
      if f:exception() ~= nil then report(f:traceback() or f:exception()) end
      busy = false
      write_prompt(tty, pending ~= nil)
      pump()
    end)
  end

  function pump()
    while not busy and #lines > 0 do run_line(table.remove(lines, 1)) end
    if ended and not busy and #lines == 0 then
      if tty then io.write("\n") end
      actor.current():stop(0)
    end
  end

  write_prompt(tty, false)
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

return M
