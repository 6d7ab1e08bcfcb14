-- Futures, tasks and timing (docs/API.md §2, "Futures and coroutines"). These
-- specs run inside pulsar-lua, in the main coroutine, so they wait as user
-- scripts do.
local support = require "support"

describe("Future", function()
  it("gives its result to wait, result and done", function()
    local f = pulsar.Future()
    assert.is_false(f:done())
    pulsar.call_later(0.01, function() f:set_result("value") end)
    assert.are.equal("value", f:wait())
    assert.is_true(f:done())
    assert.are.equal("value", f:result())
  end)

  it("raises its error from wait and result, without position noise", function()
    local f = pulsar.Future()
    f:set_exception("went wrong")
    local ok, err = pcall(f.wait, f)
    assert.are.same({false, "went wrong"}, {ok, err})
    assert.has_error(function() f:result() end, "went wrong")
    assert.are.equal("went wrong", f:exception())
  end)

  it("refuses result() before it is done and a second result", function()
    local f = pulsar.Future()
    assert.has_error(function() f:result() end)
    f:set_result(1)
    assert.has_error(function() f:set_result(2) end)
  end)

  it("calls done callbacks once done, after the resolution returns", function()
    local f, seen = pulsar.Future(), {}
    f:add_done_callback(function(x) seen[#seen + 1] = x:result() end)
    f:set_result(5)
    assert.are.same({}, seen) -- not inside set_result
    pulsar.sleep(0)
    assert.are.same({5}, seen)
    f:add_done_callback(function(x) seen[#seen + 1] = x:result() * 2 end)
    pulsar.sleep(0)
    assert.are.same({5, 10}, seen)
  end)

  it("raises on wait(timeout) expiry and leaves the future pending", function()
    local f = pulsar.Future("a slow reply")
    local ok, err = pcall(f.wait, f, 0.05)
    assert.is_false(ok)
    assert.matches("timed out after 0.05 s waiting for a slow reply", err)
    assert.is_false(f:done())
    pulsar.call_later(0.01, function() f:set_result("late") end)
    assert.are.equal("late", f:wait(10))
  end)

  it("rejects a bad timeout", function()
    assert.has_error(function() pulsar.Future():wait(-1) end)
    assert.has_error(function() pulsar.Future():wait("soon") end)
  end)

  it("cancel gives up waiting with an error", function()
    local f = pulsar.Future("the answer")
    pulsar.call_later(0.01, function() f:cancel() end)
    local ok, err = pcall(f.wait, f)
    assert.is_false(ok)
    assert.matches("cancelled: the answer", err)
    assert.is_true(f:cancelled())
    assert.is_false(f:cancel())
  end)
end)

describe("pulsar.async", function()
  it("runs a function in its own coroutine and returns its Future", function()
    local main = coroutine.running()
    local f = pulsar.async(function(a, b)
      assert.are_not.equal(main, coroutine.running())
      pulsar.sleep(0.01)
      return a + b
    end, 2, 3)
    assert.are.equal(5, f:wait())
  end)

  it("fails its Future with the error and keeps the traceback", function()
    local f = pulsar.async(function() pulsar.sleep(0) error("task failed") end)
    local ok, err = pcall(f.wait, f)
    assert.is_false(ok)
    assert.matches("future_spec.lua:%d+: task failed", err)
    assert.matches("stack traceback", f:traceback())
  end)

  it("runs many tasks concurrently", function()
    local t0, fs = pulsar.time(), {}
    for i = 1, 50 do fs[i] = pulsar.async(function() pulsar.sleep(0.2) return i end) end
    local results = pulsar.gather(table.unpack(fs)):wait()
    assert.are.equal(50, #results)
    assert.are.equal(1275, (function() local s = 0 for _, v in ipairs(results) do s = s + v end return s end)())
    assert.is_true(pulsar.time() - t0 < 0.2 * 50 / 2) -- not one after the other
  end)

  it("cancelling a waiting task stops it at its wait", function()
    local reached = false
    local f = pulsar.async(function() pulsar.sleep(0.05) reached = true end)
    assert.is_true(f:cancel())
    pulsar.sleep(0.1)
    assert.is_false(reached)
  end)

  it("a bare coroutine.yield in a task gives the loop a turn", function()
    local order = {}
    pulsar.call_soon(function() order[#order + 1] = "b" end)
    local f = pulsar.async(function() order[#order + 1] = "a"; coroutine.yield(); order[#order + 1] = "c" end)
    f:wait()
    assert.are.same({"a", "b", "c"}, order)
  end)

  it("reuses coroutines without keeping what their tasks returned", function()
    local weak = setmetatable({}, {__mode = "v"})
    for i = 1, 3 do pulsar.async(function() weak[i] = {} return weak[i] end):wait() end
    collectgarbage()
    collectgarbage()
    assert.are.same({}, weak)
  end)
end)

describe("future.run (async for short tasks)", function()
  local future = require "pulsar.future"

  it("gives the result at once, with no Future, when nothing waited", function()
    assert.are.same({true, 3}, {future.run(function(a, b) return a + b end, 1, 2)})
  end)

  it("gives the task's Future when it waited, or raised", function()
    local done, task = future.run(function() pulsar.sleep(0.01) return "later" end)
    assert.is_false(done)
    assert.are.equal("later", task:wait())
    done, task = future.run(function() error("broke") end)
    assert.is_false(done)
    assert.matches("broke", task:exception())
    assert.matches("stack traceback", task:traceback())
  end)

  it("never hands out again a task someone kept", function()
    local kept
    local _, first = future.run(function() kept = future.current_task() end)
    assert.are.equal(kept, first)
    local done, second = future.run(function() return future.current_task() end)
    assert.is_false(done)
    assert.are_not.equal(kept, second:wait())
  end)
end)

describe("pulsar.gather", function()
  it("collects results in argument order", function()
    local a = pulsar.async(function() pulsar.sleep(0.03) return "a" end)
    local b = pulsar.async(function() return "b" end)
    assert.are.same({"a", "b"}, pulsar.gather(a, b):wait())
    assert.are.same({}, pulsar.gather():wait())
  end)

  it("fails with the first error", function()
    local bad = pulsar.async(function() pulsar.sleep(0.01) error("bad one", 0) end)
    local slow = pulsar.async(function() pulsar.sleep(1) end)
    assert.has_error(function() pulsar.gather(slow, bad):wait() end, "bad one")
  end)

  it("refuses what is not a Future", function()
    assert.has_error(function() pulsar.gather(1) end, "gather: argument 1 is not a Future")
  end)
end)

describe("timing", function()
  it("sleeps at least as long as asked", function()
    local t0 = pulsar.time()
    pulsar.sleep(0.1)
    assert.is_true(pulsar.time() - t0 >= 0.099)
  end)

  it("runs call_soon before call_later and in order", function()
    local order = {}
    pulsar.call_later(0.01, function() order[#order + 1] = "later" end)
    pulsar.call_soon(function(x) order[#order + 1] = x end, "soon1")
    pulsar.call_soon(function(x) order[#order + 1] = x end, "soon2")
    pulsar.sleep(0.1)
    assert.are.same({"soon1", "soon2", "later"}, order)
  end)

  it("cancels call_later and call_soon handles", function()
    local ran = {}
    pulsar.call_later(0.01, function() ran[#ran + 1] = "later" end):cancel()
    pulsar.call_soon(function() ran[#ran + 1] = "soon" end):cancel()
    pulsar.sleep(0.05)
    assert.are.same({}, ran)
  end)

  it("lets call_later callbacks wait, as they run in their own coroutine", function()
    local f = pulsar.Future()
    pulsar.call_later(0, function() pulsar.sleep(0.01) f:set_result("waited") end)
    assert.are.equal("waited", f:wait(10))
  end)

  it("checks arguments", function()
    assert.has_error(function() pulsar.sleep(-1) end)
    assert.has_error(function() pulsar.call_later("x", print) end)
    assert.has_error(function() pulsar.call_soon(42) end)
    assert.has_error(function() pulsar.async(nil) end)
  end)
end)

describe("waiting outside a coroutine", function()
  it("runs the loop until done when no loop runs yet (synchronous fashion)", function()
    -- table.sort's comparator is not yieldable: wait must run the loop.
    local r = support.run([[-e 'local t = {3,1,2}
      table.sort(t, function(a, b) pulsar.sleep(0.001) return a < b end)
      print(table.concat(t, ","), pulsar.async(function() pulsar.sleep(0.01) return "ok" end):wait())']])
    assert.are.same({0, "1,2,3\tok\n"}, {r.code, r.out})
  end)

  it("is refused with a clear error inside a callback of the running loop", function()
    local ok, err
    local f = pulsar.Future()
    pulsar.call_later(0, function()
      ok, err = pcall(table.sort, {2, 1}, function(a, b) pulsar.sleep(0.01) return a < b end)
      f:set_result()
    end)
    f:wait(10)
    assert.is_false(ok)
    assert.matches("use pulsar.async", err)
  end)
end)
