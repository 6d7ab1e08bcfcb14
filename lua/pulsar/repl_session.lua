--- pulsar.repl_session: evaluating REPL lines in this VM, apart from any
-- terminal. The REPL front-end (pulsar.repl) reads and edits lines and asks a
-- session to evaluate them; the same session serves a console attached from
-- another process (pulsar.attach), which is why results come back as text.
--
--   local s = require("pulsar.repl_session").new([env [, opts]])
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
-- Values are written as Lua's REPL writes them (tostring, tab-separated),
-- except tables, which are written as readable constructors (pulsar.pretty);
-- opts.pretty holds pulsar.pretty's limits.
--
-- The word completed is the run of names, dots and colons that ends the line
-- (`pulsar.sp`, `s:up`, `):up` after a string literal). Its candidates are
-- whole replacements of that word: globals and keywords for a bare name;
-- after `a.b.` or `a.b:`, the fields of the value a.b found by walking the
-- names through tables and their metatables' __index tables (never calling
-- code), and after `:` only its methods; string methods after a string.
-- complete never waits, but a front-end calls it inside a task, so that a
-- session over the wire may.
local future = require "pulsar.future"
local pretty = require "pulsar.pretty"

-- Taken at load: a line may remove the standard globals (string = nil).
local _G, coroutine, string, table = _G, coroutine, string, table
local getmetatable, ipairs, load, next, pcall, rawget, setmetatable, tostring, type =
  getmetatable, ipairs, load, next, pcall, rawget, setmetatable, tostring, type

local M = {}

local Session = {}
Session.__index = Session

function M.new(env, opts)
  opts = opts or {}
  return setmetatable({env = env or _G, running = nil, pretty = opts.pretty}, Session)
end

-- As lua.c's REPL, a first line starting with `=` means `return`.
local function compile(source, env)
  if source:sub(1, 1) == "=" then source = "return " .. source:sub(2) end
  local chunk = load("return " .. source, "=stdin", "t", env)
  if chunk then return chunk end
  local err
  chunk, err = load(source, "=stdin", "t", env)
  if chunk then return chunk end
  if err:sub(-5) == "<eof>" then return nil, nil end -- incomplete: read on
  return nil, err
end

--- A top-level value: as print would write it, but tables as constructors.
local function format_value(v, opts)
  if type(v) == "table" then
    local mt = getmetatable(v)
    if not (type(mt) == "table" and rawget(mt, "__tostring")) then return pretty.format(v, opts) end
  end
  return tostring(v)
end

local function format_values(values, opts)
  if values.n == 0 then return nil end
  local out = {}
  for i = 1, values.n do out[i] = format_value(values[i], opts) end
  return table.concat(out, "\t")
end

-- Ctrl-C interrupts even Lua code that never waits: the host's signal
-- watch does it (interrupt.c), for whatever the arbiter runs.
local function run(chunk, opts)
  local values = table.pack(chunk())
  if values.n == 1 and future.is_future(values[1]) then
    values = table.pack(values[1]:wait())
  end
  return format_values(values, opts)
end

local INTERRUPTED = "interrupted"

-- A traceback ends where the line's own code was called: what is below is
-- this file and the task machinery, of no interest at a prompt.
local function trim(traceback)
  local out = {}
  for text in traceback:gmatch("[^\n]+") do
    if text:find("pulsar/repl_session.lua", 1, true) and #out > 1 then break end
    out[#out + 1] = text
  end
  return table.concat(out, "\n")
end

function Session:eval(source)
  local chunk, err = compile(source, self.env)
  if not chunk then
    if err == nil then return {status = "incomplete"} end
    return {status = "error", text = err}
  end
  local task = future.async(run, chunk, self.pretty)
  task.label = "the line"
  self.running = task
  local ok = pcall(task.wait, task)
  if self.running == task then self.running = nil end
  if ok then return {status = "ok", text = task:result()} end
  if task:cancelled() then return {status = "error", text = INTERRUPTED} end
  return {status = "error", text = trim(task:traceback() or tostring(task:exception()))}
end

function Session:cancel()
  local task = self.running
  if not task or task:done() then return false end
  task:cancel()
  return true
end

---------------------------------------------------------------------------
-- Completion

local KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for",
                  "function", "goto", "if", "in", "local", "nil", "not", "or",
                  "repeat", "return", "then", "true", "until", "while"}

-- The names a value offers: its own keys, then those of its metatable's
-- __index tables, down a bounded chain. Strings offer the string library.
local function names_of(value, methods_only)
  local out, seen = {}, {}
  local function add(k, v)
    if type(k) == "string" and not seen[k] and pretty.is_identifier(k)
        and (not methods_only or type(v) == "function" or type(v) == "table") then
      seen[k] = true
      out[#out + 1] = k
    end
  end
  local t = type(value) == "string" and string or value
  for _ = 1, 8 do
    if type(t) ~= "table" then break end
    for k, v in next, t do add(k, v) end
    local mt = getmetatable(t)
    t = type(mt) == "table" and rawget(mt, "__index") or nil
  end
  return out
end

-- One step of the walk: t[name], through __index tables only.
local function field(t, name)
  if type(t) == "string" then t = string end
  for _ = 1, 8 do
    if type(t) ~= "table" then return nil end
    local v = rawget(t, name)
    if v ~= nil then return v end
    local mt = getmetatable(t)
    t = type(mt) == "table" and rawget(mt, "__index") or nil
  end
end

--- The value the dotted path names ("a.b.c"), or nil.
local function resolve(env, path)
  local v = env
  for name in path:gmatch("[^.:]+") do
    v = field(v, name)
    if v == nil then return nil end
  end
  return v
end

-- The receiver of a `:` or `.` that follows no name: a string literal,
-- bare or in parentheses, as in ("x"):up.
local function literal_before(text)
  if text:match("[\"']%s*%)?%s*$") or text:match("%]%]%s*%)?%s*$") then return "" end
end

function Session:complete(line)
  local word = line:match("[%w_.:]*$")
  local base, sep, partial = word:match("^(.-)([.:])([%w_]*)$")
  local pool, from = {}, nil
  if not base then
    partial = word
    from = names_of(self.env)
    for _, k in ipairs(KEYWORDS) do from[#from + 1] = k end
  else
    local receiver
    if base == "" then
      if literal_before(line:sub(1, #line - #word)) then receiver = "" end
    elseif base:match("^[%a_][%w_]*[%w_.:]*$") and not base:match("[.:][.:]") then
      receiver = resolve(self.env, base)
    end
    if receiver == nil then return {} end
    from = names_of(receiver, sep == ":")
  end
  local seen = {}
  for _, name in ipairs(from) do
    local hidden = name:sub(1, 2) == "__" and partial:sub(1, 1) ~= "_"
    if name:sub(1, #partial) == partial and not hidden and not seen[name] then
      seen[name] = true
      pool[#pool + 1] = (base or "") .. (sep or "") .. name
    end
  end
  table.sort(pool)
  return pool
end

return M
