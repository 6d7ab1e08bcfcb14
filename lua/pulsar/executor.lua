--- pulsar.executor: run functions in worker threads, each with a Lua VM of
-- its own (docs/API.md: `actor:executor():submit(fn, ...)`).
--
--   local ex = Executor.new(3)
--   local f = ex:submit(function(a, b) return a + b end, 1, 2)
--   f:wait() --> 3
--
-- fn and its arguments cross to the worker's VM by value, under the codec's
-- crossing rules (upvalues copied, _ENV bound to the worker's globals, module
-- upvalues `require`d again there); a value that cannot cross is refused at
-- submit. The Future gets fn's first result, decoded back in this VM, or
-- fails with "executor: " and the worker's error message (its traceback is
-- the Future's traceback()).
--
-- Worker VMs keep their globals from one job to the next, and which worker
-- runs a job is unspecified. A job that never returns keeps its worker busy,
-- and the actor's shutdown waits for it. The C side is host/spawn/executor.c.
local core = require "pulsar.core"
local future = require "pulsar.future"

-- Taken at load: a script may remove the standard globals (debug = nil).
local getupvalue, pairs, rawequal = debug.getupvalue, pairs, rawequal

local M = {}

local Executor = {}
Executor.__index = Executor
Executor.__name = "pulsar.Executor"

function Executor.__tostring(ex)
  return ("Executor(%d threads%s)"):format(ex.nthreads, ex._closed and ", closed" or "")
end

--- A pool of `nthreads` worker threads (default 5); the threads start on
-- the first submit.
function M.new(nthreads)
  if nthreads ~= nil and math.type(nthreads) ~= "integer" then
    error("Executor.new: nthreads must be an integer", 2)
  end
  return setmetatable({nthreads = nthreads or 5, _pool = core.executor(nthreads)}, Executor)
end

-- The job's callback: settles the Future unless it was cancelled meanwhile.
local function settle(f, ok, data, traceback)
  if f:done() then return end
  if not ok then
    f:set_exception("executor: " .. data)
    f._traceback = traceback -- what Future:traceback() returns
    return
  end
  local decoded, value = pcall(core.decode, data, true) -- our own worker's bytes
  if decoded then
    f:set_result(value)
  else
    f:set_exception("executor: cannot decode the result: " .. tostring(value))
  end
end

-- The name of the pulsar module `value` is ("pulsar", "pulsar.log"...), or nil.
local function pulsar_module_name(value)
  if type(value) ~= "table" then return nil end
  for name, module in pairs(package.loaded) do
    if rawequal(module, value) and (name == "pulsar" or name:sub(1, 7) == "pulsar.") then
      return name
    end
  end
  return nil
end

-- Refuses, at the sender, a function that reaches a pulsar module through an
-- upvalue (its own or a nested function's): worker VMs have plain Lua
-- libraries and no pulsar.core (no loop runs there), so such a module would
-- fail to load in the worker with a long "module not found" error.
local function check_upvalues(fn, seen)
  if seen[fn] then return end
  seen[fn] = true
  for i = 1, math.huge do
    local name, value = getupvalue(fn, i)
    if name == nil then return end
    local module = pulsar_module_name(value)
    if module then
      error(("executor: fn's upvalue '%s' is the %s module, which executor threads "
             .. "do not have; pass plain values"):format(name, module), 0)
    end
    if type(value) == "function" then check_upvalues(value, seen) end
  end
end

--- Runs fn(...) in a worker thread; returns a Future of its first result
-- (one value: further results are dropped, as `run` does).
function Executor:submit(fn, ...)
  if type(fn) ~= "function" then error("submit needs a function", 2) end
  local checked, why = pcall(check_upvalues, fn, {})
  if not checked then error(why, 2) end
  if self._closed then error("the executor is closed", 2) end
  local encoded, payload = pcall(core.executor_job, fn, ...)
  if not encoded then error("executor: cannot submit: " .. payload, 2) end
  local f = future.Future("executor job")
  self._pool:submit(payload, function(ok, data, traceback) settle(f, ok, data, traceback) end)
  return f
end

--- Takes no more jobs: queued jobs fail with "executor: closed before the
-- job ran"; running jobs finish and report; then the threads end.
function Executor:close()
  self._closed = true
  self._pool:close()
end

M.Executor = Executor
return M
