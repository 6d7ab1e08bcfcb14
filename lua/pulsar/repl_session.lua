--- pulsar.repl_session: evaluating REPL lines in this VM, apart from any
-- terminal. The REPL front-end (pulsar.repl) reads and edits lines and asks a
-- session to evaluate them; the same session serves a console attached from
-- another process (pulsar.attach), which is why results come back as text.
--
--   local s = require("pulsar.repl_session").new()
--   s:eval(source)  -- inside a task; waits, then returns one of
--       {status = "incomplete"}            an unfinished statement: call again
--                                          with the whole text once more is typed
--       {status = "ok", text = s | nil}    the values, formatted; nil when none
--       {status = "error", text = s}       message and traceback
--   s:complete(line) -> {candidates}       completions of the word ending `line`
--   s:cancel() -> boolean                  fails the evaluation in progress
--
-- A line is tried as `return <line>` first, so an expression's values are
-- printed; a Future left as the only value is awaited and its result shown.
local future = require "pulsar.future"

local M = {}

local Session = {}
Session.__index = Session

function M.new(env)
  return setmetatable({env = env or _G, running = nil}, Session)
end

local function compile(source, env)
  local chunk = load("return " .. source, "=stdin", "t", env)
  if chunk then return chunk end
  local err
  chunk, err = load(source, "=stdin", "t", env)
  if chunk then return chunk end
  if err:sub(-5) == "<eof>" then return nil, nil end -- incomplete: read on
  return nil, err
end

local function format_values(values)
  if values.n == 0 then return nil end
  local out = {}
  for i = 1, values.n do out[i] = tostring(values[i]) end
  return table.concat(out, "\t")
end

local function run(chunk)
  local values = table.pack(chunk())
  if values.n == 1 and future.is_future(values[1]) then
    values = table.pack(values[1]:wait())
  end
  return format_values(values)
end

function Session:eval(source)
  local chunk, err = compile(source, self.env)
  if not chunk then
    if err == nil then return {status = "incomplete"} end
    return {status = "error", text = err}
  end
  local task = future.async(run, chunk)
  self.running = task
  local ok = pcall(task.wait, task)
  if self.running == task then self.running = nil end
  if ok then return {status = "ok", text = task:result()} end
  return {status = "error", text = task:traceback() or tostring(task:exception())}
end

function Session:cancel()
  local task = self.running
  if not task or task:done() then return false end
  task:cancel()
  return true
end

function Session:complete(line)
  local prefix = line:match("[%w_]*$")
  local out = {}
  for name in pairs(self.env) do
    if type(name) == "string" and name:sub(1, #prefix) == prefix then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

return M
