--- pulsar.future: Futures, tasks and the ready queue that drives them.
--
-- A task is a coroutine that pulsar runs; its Future holds what the coroutine
-- returns or raises. `Future:wait()` inside a task yields to the loop and the
-- task is resumed when the Future is done. Outside any task (and only there,
-- since libuv's loop is not reentrant) `wait` runs the loop itself until the
-- Future is done: pulsar's "synchronous fashion".
--
-- Callbacks and resumptions never run inside `set_result`: they go through
-- the ready queue, which the host drains from the loop (core.wake), so a
-- resolution deep in one callback cannot re-enter another.
local core = require "pulsar.core"
local log = require "pulsar.log"

-- Taken at load, so that a script that removes a standard global
-- (coroutine = nil) does not break the tasks that run it.
local coroutine, debug, table = coroutine, debug, table
local error, getmetatable, pcall, select, setmetatable, tostring, type, xpcall =
  error, getmetatable, pcall, select, setmetatable, tostring, type, xpcall

local M = {}

local PENDING, DONE, FAILED, CANCELLED = "pending", "done", "failed", "cancelled"
local WAIT = setmetatable({}, {__name = "pulsar.wait"}) -- what wait() yields

local function log_error(where, msg)
  log.error("%s: %s", where, tostring(msg))
end

local function traceback(msg)
  if type(msg) ~= "string" then return msg end
  return debug.traceback(msg, 2)
end

---------------------------------------------------------------------------
-- The ready queue: pairs (entry, future). An entry is a function (a done
-- callback) or a task to resume.
local queue, head, tail = {}, 1, 0
local woken = false

local step -- forward: resumes a task

local function schedule(entry, arg)
  queue[tail + 1], queue[tail + 2] = entry, arg
  tail = tail + 2
  if not woken then
    woken = true
    core.wake()
  end
end

local function run_entry(entry, arg)
  if type(entry) == "function" then
    local ok, err = xpcall(entry, traceback, arg)
    if not ok then log_error("callback", err) end
  else
    step(entry)
  end
end

--- Runs what was queued when it started; returns true if more is queued.
local function drain()
  local last = tail
  while head <= last do
    local entry, arg = queue[head], queue[head + 1]
    queue[head], queue[head + 1] = nil, nil
    head = head + 2
    run_entry(entry, arg)
  end
  if head > tail then
    head, tail, woken = 1, 0, false
    return false
  end
  return true
end
core.set_ready_handler(drain)

local function queue_empty() return head > tail end

---------------------------------------------------------------------------
-- Futures

local Future = {}
Future.__index = Future
Future.__name = "pulsar.Future"

function Future.__tostring(f)
  return ("Future(%s%s)"):format(f._state, f.label and ", " .. f.label or "")
end

--- A new pending Future; `label` says what it waits for, in messages.
function M.Future(label)
  return setmetatable({_state = PENDING, label = label}, Future)
end

function M.is_future(v) return getmetatable(v) == Future end

local function add_waiter(f, w)
  if f._w1 == nil then
    f._w1 = w
  else
    local list = f._wn
    if not list then list = {}; f._wn = list end
    list[#list + 1] = w
  end
end

local function remove_waiter(f, w)
  if f._w1 == w then f._w1 = nil; return true end
  local list = f._wn
  for i = 1, list and #list or 0 do
    if list[i] == w then table.remove(list, i); return true end
  end
  return false
end

--- Settles the future and queues everything that waits for it.
function Future:_settle(state, value, tb)
  self._state, self._value, self._traceback = state, value, tb
  local w1, list = self._w1, self._wn
  self._w1, self._wn = nil, nil
  if w1 ~= nil then schedule(w1, self) end
  for i = 1, list and #list or 0 do schedule(list[i], self) end
end

function Future:done() return self._state ~= PENDING end
function Future:cancelled() return self._state == CANCELLED end

function Future:set_result(value)
  if self._state ~= PENDING then error("future already done: " .. tostring(self), 2) end
  self:_settle(DONE, value)
end

function Future:set_exception(err)
  if self._state ~= PENDING then error("future already done: " .. tostring(self), 2) end
  self:_settle(FAILED, err)
end

--- The result; raises the future's error, or if it is not done yet.
function Future:result()
  local state = self._state
  if state == DONE then return self._value end
  if state == PENDING then error("future not done yet: " .. tostring(self), 2) end
  error(self._value, 0)
end

--- The error (nil if it succeeded); raises if not done yet.
function Future:exception()
  if self._state == PENDING then error("future not done yet: " .. tostring(self), 2) end
  if self._state ~= DONE then return self._value end
end

--- Whether it failed or was cancelled; unlike exception(), true also for
-- a task that raised nil (error()). Raises if not done yet.
function Future:failed()
  if self._state == PENDING then error("future not done yet: " .. tostring(self), 2) end
  return self._state ~= DONE
end

--- The traceback of a failed task, when there is one.
function Future:traceback() return self._traceback end

function Future:add_done_callback(fn)
  if type(fn) ~= "function" then error("add_done_callback needs a function", 2) end
  if self._state ~= PENDING then schedule(fn, self) else add_waiter(self, fn) end
  return self
end

--- Gives up waiting: the future fails with "cancelled". A task stops at the
-- wait it is in. Returns true if it was still pending.
function Future:cancel()
  if self._state ~= PENDING then return false end
  local co = self._co
  if co then
    if self._awaiting then remove_waiter(self._awaiting, self) end
    self._co, self._awaiting = nil, nil
  end
  self:_settle(CANCELLED, "cancelled: " .. (self.label or "future"))
  return true
end

local function timeout_message(f, timeout)
  return ("timed out after %g s waiting for %s"):format(timeout, f.label or "a future")
end

local function check_timeout(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout) then
    error("wait: timeout must be a number of seconds from 0", 3)
  end
end

-- In a task: yield until f is done or the timeout expires.
local function wait_in_task(f, task, timeout)
  add_waiter(f, task)
  task._awaiting = f
  local timer
  if timeout then
    timer = core.timer(timeout, function()
      if remove_waiter(f, task) then
        task._timed_out = true
        step(task)
      end
    end)
  end
  repeat coroutine.yield(WAIT) until f._state ~= PENDING or task._timed_out
  task._awaiting = nil
  if timer then timer:cancel() end
  if task._timed_out then
    task._timed_out = nil
    error(timeout_message(f, timeout), 3)
  end
end

-- Outside any task: run the loop until f is done.
local function wait_in_loop(f, timeout)
  if core.loop_running() then
    error("wait() outside a pulsar coroutine while the event loop runs: " ..
          "use pulsar.async(fn) or add_done_callback", 3)
  end
  local deadline = timeout and core.hrtime() + timeout
  local timer = timeout and core.timer(timeout, function() end) -- wakes the loop
  while f._state == PENDING do
    if deadline and core.hrtime() >= deadline then
      timer:cancel()
      error(timeout_message(f, timeout), 3)
    end
    if core.exit_requested() then error("the arbiter is stopping", 3) end
    if not core.run_once() and f._state == PENDING and queue_empty() then
      error("nothing left to run: " .. (f.label or "this future") .. " can never complete", 3)
    end
  end
  if timer then timer:cancel() end
end

local tasks = setmetatable({}, {__mode = "k"}) -- coroutine -> its task

--- The result; waits for it first (yielding inside a task).
function Future:wait(timeout)
  check_timeout(timeout)
  if self._state == PENDING then
    local task = tasks[coroutine.running()]
    if task and coroutine.isyieldable() then
      wait_in_task(self, task, timeout)
    else
      wait_in_loop(self, timeout)
    end
  end
  return self:result()
end

---------------------------------------------------------------------------
-- Tasks

-- Coroutines are reused: a task's coroutine runs `pooled`, which takes
-- each function to run from the resume that starts it, calls it, leaves its
-- first result in `finished_value` and yields FINISHED instead of ending,
-- waiting for the next one. Making and collecting a coroutine costs more
-- than the rest of a short task, and an HTTP server runs one per request.
-- An idle coroutine holds nothing of the tasks it ran (the function, its
-- arguments and its result live only in `call`'s frame, or until the
-- resumer takes them), and waits in the pool with the task record it will
-- run as (tasks[co]). A coroutine whose function raised is dead, and one
-- whose task was cancelled stays where it was: neither comes back.
local FINISHED = setmetatable({}, {__name = "pulsar.finished"})
local POOL_MAX = 32
local pool, pooled_count = {}, 0
local finished_value -- the result of the task that just yielded FINISHED

local function call(fn, ...) finished_value = fn(...) end

local function pooled()
  while true do call(coroutine.yield(FINISHED)) end
end

local function new_record(co)
  local task = setmetatable({_state = PENDING, _co = co}, Future)
  tasks[co] = task
  return task
end

-- An idle coroutine and its task record, new ones if none is idle.
local function take()
  if pooled_count == 0 then
    local co = coroutine.create(pooled)
    coroutine.resume(co) -- to its first yield, where tasks come in
    return co, new_record(co)
  end
  local co = pool[pooled_count]
  pool[pooled_count], pooled_count = nil, pooled_count - 1
  return co, tasks[co]
end

-- Back to the pool; `fresh` says its record was never seen outside, and
-- is still as new: it serves again, else the coroutine gets a new one.
local function give_back(co, fresh)
  if pooled_count >= POOL_MAX then
    tasks[co] = nil
    return
  end
  if not fresh then new_record(co) end
  pooled_count = pooled_count + 1
  pool[pooled_count] = co
end

-- The result a coroutine left as it yielded FINISHED, taken.
local function take_result()
  local value = finished_value
  finished_value = nil
  return value
end

-- What a resume of the task's coroutine came to: settled when its
-- function ended, queued again after a bare coroutine.yield().
-- An error object named as lua.c's message handler names it: strings and
-- numbers as they are, an object by its __tostring, anything else by type.
local function error_message(err)
  local kind = type(err)
  if kind == "string" or kind == "number" then return tostring(err) end
  local mt = debug.getmetatable(err)
  if mt and mt.__tostring then
    local ok, text = pcall(mt.__tostring, err)
    if ok and type(text) == "string" then return text end
  end
  return ("(error object is a %s value)"):format(kind)
end

-- A failed task's coroutine is closed as a protected call would close its
-- frames: its pending to-be-closed variables run now, after the traceback
-- was taken (as lua.c's message handler runs before they close).
local function resumed(task, co, ok, res)
  if ok and res == FINISHED then
    task._co = nil
    give_back(co, false)
    task:_settle(DONE, take_result())
  elseif not ok then
    task._co = nil
    local tb = debug.traceback(co, error_message(res))
    coroutine.close(co)
    task:_settle(FAILED, res, tb)
  elseif res ~= WAIT then
    schedule(task) -- give the loop a turn
  end
end

-- Resumes the task's coroutine (the host records the running coroutine).
function step(task, ...)
  local co = task._co
  if not co then return end -- cancelled
  resumed(task, co, core.resume(co, ...))
end

--- Runs fn(...) in a new task, at once, until its first wait; returns the
-- task's Future.
function M.async(fn, ...)
  if type(fn) ~= "function" then error("pulsar.async needs a function", 2) end
  local co, task = take()
  task._seen = true
  resumed(task, co, core.resume(co, fn, ...))
  return task
end

--- async for the many short tasks of a server: returns true and fn's
-- first result when fn(...) ran to its end without waiting (no Future is
-- made), else false and the task's Future (failed, if fn raised).
function M.run(fn, ...)
  local co, task = take()
  local ok, res = core.resume(co, fn, ...)
  if ok and res == FINISHED and not task._seen then
    give_back(co, true)
    return true, take_result()
  end
  task._seen = true
  resumed(task, co, ok, res)
  return false, task
end

--- Suspends the running task for good (it is never resumed): for code
-- that must not go on, such as os.exit inside a task.
function M.park()
  while true do coroutine.yield(WAIT) end
end

--- The task running now, or nil outside pulsar's coroutines.
function M.current_task()
  local task = tasks[coroutine.running()]
  if task then task._seen = true end -- not to be reused by run()
  return task
end

---------------------------------------------------------------------------
-- Timing

local SoonHandle = {}
SoonHandle.__index = SoonHandle
function SoonHandle:cancel() self.cancelled = true end

-- A callback's task has no caller to report to: its error is logged.
local function log_failure(task)
  if task._state ~= DONE then log_error("callback failed", task._traceback or task._value) end
end

local function run_callback(fn, args)
  local task = M.async(fn, table.unpack(args, 1, args.n))
  if task._state == PENDING then task:add_done_callback(log_failure) else log_failure(task) end
end

local function run_soon(handle)
  if not handle.cancelled then run_callback(handle.fn, handle.args) end
end

function M.call_soon(fn, ...)
  if type(fn) ~= "function" then error("call_soon needs a function", 2) end
  local handle = setmetatable({fn = fn, args = table.pack(...)}, SoonHandle)
  schedule(run_soon, handle)
  return handle
end

function M.call_later(seconds, fn, ...)
  if type(seconds) ~= "number" or seconds < 0 then
    error("call_later needs a delay in seconds from 0", 2)
  end
  if type(fn) ~= "function" then error("call_later needs a function", 2) end
  local args = table.pack(...)
  return core.timer(seconds, function() run_callback(fn, args) end)
end

function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    error("sleep needs a number of seconds from 0", 2)
  end
  local f = M.Future(("sleep(%g)"):format(seconds))
  core.timer(seconds, function() f:_settle(DONE, nil) end)
  f:wait()
end

--- A Future of the list of the results of every future given, failing with
-- the first error.
function M.gather(...)
  local futures = table.pack(...)
  local out = M.Future("gather")
  local results, left = {}, futures.n
  if left == 0 then out:_settle(DONE, results) end
  for i = 1, futures.n do
    local f = futures[i]
    if not M.is_future(f) then
      error(("gather: argument %d is not a Future"):format(i), 2)
    end
    f:add_done_callback(function(done)
      if out._state ~= PENDING then return end
      if done._state ~= DONE then return out:_settle(FAILED, done._value, done._traceback) end
      results[i], left = done._value, left - 1
      if left == 0 then out:_settle(DONE, results) end
    end)
  end
  return out
end

return M
