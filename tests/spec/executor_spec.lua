-- The executor (docs/API.md: `actor:executor():submit(fn, ...)`): functions run
-- in worker threads, each with a Lua VM of its own, and their results come
-- back as Futures. These specs run inside pulsar-lua, in the main coroutine,
-- so a wait yields to the loop. Bounds are generous: the machines that run
-- the suite are small and noisy.
local support = require "support"
local executor = require "pulsar.executor"

-- Busy for `seconds` of process CPU time (os.clock), in whichever VM runs it.
local function spin(seconds)
  local start = os.clock()
  while os.clock() - start < seconds do end
end

-- Creates file `mine`, then waits (up to `limit` seconds of CPU) for file
-- `theirs`: two jobs that do this with each other's names both return true
-- only if they ran at the same time.
local function meet(mine, theirs, limit)
  assert(io.open(mine, "w")):close()
  local start = os.clock()
  while os.clock() - start < limit do
    local f = io.open(theirs, "r")
    if f then f:close() return true end
  end
  return false
end

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function failure(f)
  local ok, err = pcall(f.wait, f, 30)
  assert.is_false(ok, "the job should have failed")
  return err
end

describe("Executor", function()
  local ex
  before_each(function() ex = executor.new(3) end)
  after_each(function() ex:close() end)

  it("returns results of every type that crosses", function()
    local values = {42, 1.5, "text\0with a zero", true, false, {1, "two", {x = {y = 3}}}}
    for _, v in ipairs(values) do
      assert.are.same(v, ex:submit(function(x) return x end, v):wait(30))
    end
    assert.is_nil(ex:submit(function() end):wait(30))
    local f = ex:submit(function() return function(a) return a * 2 end end):wait(30)
    assert.are.equal(14, f(7))
  end)

  it("passes every argument, nils in place", function()
    local f = ex:submit(function(...) return {n = select("#", ...), ...} end, 1, nil, "three", nil)
    assert.are.same({n = 4, 1, nil, "three"}, f:wait(30))
  end)

  it("copies upvalues: numbers, tables and modules", function()
    local n, t, str = 10, {x = 5, list = {1, 2}}, string
    local f = ex:submit(function()
      t.x = 99 -- the worker's copy
      return n + #t.list + #str.rep("a", 3), t.x
    end)
    assert.are.equal(15, f:wait(30))
    assert.are.equal(5, t.x)
  end)

  it("requires a module upvalue again in the worker, from the owner's package.path", function()
    local f = ex:submit(function(s) return support.quote(s) end, "it's")
    assert.are.equal(support.quote("it's"), f:wait(30))
  end)

  it("binds _ENV to the worker's globals, which persist from job to job", function()
    rawset(_G, "pulsar_executor_spec_owner_only", true)
    local one = executor.new(1)
    local seen = one:submit(function()
      return {pulsar_executor_spec_owner_only, _VERSION, type(string.format)}
    end):wait(30)
    assert.are.same({nil, _VERSION, "function"}, seen)
    local count = function() counter = (counter or 0) + 1 return counter end -- luacheck: ignore
    assert.are.equal(1, one:submit(count):wait(30))
    assert.are.equal(2, one:submit(count):wait(30))
    assert.is_nil(rawget(_G, "counter"))
    one:close()
    rawset(_G, "pulsar_executor_spec_owner_only", nil)
  end)

  it("fails the Future with the error's message and keeps the traceback", function()
    local f = ex:submit(function() error("boom") end)
    local err = failure(f)
    assert.matches("^executor: [^\n]*executor_spec%.lua:%d+: boom$", err)
    assert.matches("stack traceback:", f:traceback())
    assert.are.equal("executor: (error object is a table value)",
                     failure(ex:submit(function() error({}) end)))
    assert.are.equal("executor: 7", failure(ex:submit(function() error(7) end)))
  end)

  it("fails the Future when the result cannot cross, naming it", function()
    local err = failure(ex:submit(function() return coroutine.create(print) end))
    assert.matches("^executor: cannot send the result back: result", err)
    assert.matches("thread", err)
  end)

  it("refuses at submit an upvalue that cannot cross, naming it", function()
    local co = coroutine.create(function() end)
    local ok, err = pcall(function()
      local f = ex:submit(function() return co end)
      return f
    end)
    assert.is_false(ok)
    assert.matches("^[^\n]*executor_spec%.lua:%d+: executor: cannot submit: ", err)
    assert.truthy(err:find("co", 1, true), err)
    assert.matches("thread", err)
    assert.has_error(function() ex:submit("not a function") end, "submit needs a function")
    -- nothing was queued: the executor still works
    assert.are.equal(1, ex:submit(function() return 1 end):wait(30))
  end)

  it("completes many concurrent jobs", function()
    local jobs = {}
    for i = 1, 200 do jobs[i] = ex:submit(function(x) return x * x end, i) end
    local results = pulsar.gather(table.unpack(jobs)):wait(60)
    for i = 1, 200 do assert.are.equal(i * i, results[i]) end
  end)

  it("runs CPU-bound jobs at the same time", function()
    local a, b = support.tmpname(".a"), support.tmpname(".b")
    local fa = ex:submit(meet, a, b, 20)
    local fb = ex:submit(meet, b, a, 20)
    assert.are.same({true, true}, pulsar.gather(fa, fb):wait(60))
    os.remove(a); os.remove(b)
  end)

  it("keeps the owner's loop running while a job runs", function()
    local job = ex:submit(spin, 0.5)
    local fired_during_job
    pulsar.call_later(0.05, function() fired_during_job = not job:done() end)
    job:wait(60)
    assert.is_true(fired_during_job)
  end)

  it("ignores the result of a job whose Future was cancelled", function()
    local f = ex:submit(spin, 0.1)
    f:cancel()
    assert.are.equal("next", ex:submit(function() return "next" end):wait(30))
    pulsar.sleep(0.2)
    assert.is_true(f:cancelled())
  end)
end)

describe("Executor:close", function()
  it("fails queued jobs, lets running ones finish and refuses new ones", function()
    local ex = executor.new(1)
    local started, release = support.tmpname(".started"), support.tmpname(".release")
    -- runs until the owner creates `release`, so `queued` stays queued
    local running = ex:submit(function()
      assert(io.open(started, "w")):close()
      local deadline = os.clock() + 30
      while not file_exists(release) and os.clock() < deadline do end
      return "finished"
    end)
    local queued = ex:submit(function() return "ran" end)
    assert.truthy(support.wait_for(function() return file_exists(started) end, 30))
    ex:close()
    ex:close() -- twice is harmless
    assert(io.open(release, "w")):close()
    assert.are.equal("finished", running:wait(30))
    assert.are.equal("executor: closed before the job ran", failure(queued))
    assert.has_error(function() ex:submit(function() end) end, "the executor is closed")
    os.remove(started)
    os.remove(release)
  end)

  it("closes an executor that never ran a job", function()
    executor.new(2):close()
  end)

  it("runs the jobs of an executor collected without close", function()
    local f = executor.new(2):submit(function() spin(0.1) return "done" end)
    collectgarbage()
    collectgarbage()
    assert.are.equal("done", f:wait(30))
  end)
end)

describe("an executor at the actor's exit", function()
  it("keeps the loop alive until submitted jobs report", function()
    local r = support.run(support.quote(support.script([[
      local ex = require("pulsar.executor").new(2)
      ex:submit(function() return 6 * 7 end):add_done_callback(function(f)
        print(f:result())
      end)
      print("main done")
    ]])))
    assert.are.same({0, "main done\n42\n"}, {r.code, r.out}, r.err)
  end)

  it("does not keep the loop alive when idle", function()
    local r = support.run(support.quote(support.script([[
      local ex = require("pulsar.executor").new(2)
      assert(ex:submit(function() return 1 end):wait(30) == 1)
      print("done")
    ]])))
    assert.are.same({0, "done\n"}, {r.code, r.out}, r.err)
  end)

  it("waits for running jobs and drops queued ones on os.exit", function()
    local r = support.run(support.quote(support.script([[
      local ex = require("pulsar.executor").new(1)
      local started = os.tmpname()
      os.remove(started)
      ex:submit(function()
        assert(io.open(started, "w")):close()
        local t = os.clock() while os.clock() - t < 0.5 do end
        io.stdout:write("job finished\n") io.stdout:flush()
      end)
      for i = 1, 5 do
        ex:submit(function() print("queued job ran") end):add_done_callback(function()
          print("callback called")
        end)
      end
      while not io.open(started) do pulsar.sleep(0.01) end
      os.remove(started)
      os.exit(3)
    ]])))
    assert.are.same({3, "job finished\n"}, {r.code, r.out}, r.err)
  end)
end)

describe("an executor under valgrind", function()
  local skip = os.getenv("PULSAR_BUILD") == "asan"
               or not os.execute("command -v valgrind >/dev/null 2>&1")

  it("leaks nothing: results, errors, close, collection and queued jobs at exit", function()
    if skip then return pending("valgrind runs on the release build only") end
    local s = support.script([[
      local executor = require "pulsar.executor"
      local ex = executor.new(3)
      local jobs = {}
      for i = 1, 20 do jobs[i] = ex:submit(function(x) return {x, tostring(x)} end, i) end
      assert(pulsar.gather(table.unpack(jobs)):wait(60)[20][2] == "20")
      assert(not pcall(function() return ex:submit(function() error("boom") end):wait(60) end))
      assert(not pcall(function() return ex:submit(coroutine.create):wait(60) end))
      local co = coroutine.create(print)
      assert(not pcall(ex.submit, ex, function() return co end))
      ex:close()
      local f = executor.new(2):submit(function() return 5 end)
      collectgarbage() collectgarbage()
      assert(f:wait(60) == 5)
      local last = executor.new(1)
      for i = 1, 5 do last:submit(function() return i end) end
      executor.new(2) -- never used
      print("ok")
      os.exit(0)
    ]])
    local h = support.start(support.quote(s),
      "valgrind -q --leak-check=full --show-leak-kinds=definite,indirect " ..
      "--errors-for-leak-kinds=definite,indirect --error-exitcode=99")
    assert.are.equal(0, h.wait(300), h.err())
    assert.are.equal("ok\n", h.out())
  end)
end)
