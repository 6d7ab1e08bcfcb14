-- Supervision faults: a start hook that never returns, the first heartbeat,
-- a stopping hook that never returns, replies whatever a handler raised,
-- heartbeats and periodic tasks that fail, shared and unique names, and the
-- exit status once an application gave up.
local support = require "support"

local function wait_until(check, timeout) return support.wait_for(check, timeout or 30) end

local function gone(target)
  return not pcall(function() pulsar.send(target, "ping"):wait(5) end)
end

describe("a start hook that never returns", function()
  for _, kind in ipairs {"thread", "process"} do
    for how, start in pairs {
      sleeping = function() pulsar.sleep(1e6) end,
      spinning = function() while true do end end,
    } do
      it("fails the spawn of a " .. kind .. " actor " .. how .. " and ends it", function()
        local t0 = pulsar.time()
        local f = pulsar.spawn{name = "never-" .. how, concurrency = kind, timeout = 1,
                               cfg = {exit_timeout = 0.5}, start = start}
        local ok, err = pcall(f.wait, f, 60)
        assert.is_false(ok)
        assert.matches("actor 'never%-" .. how .. "' %(%x+%) did not start within 1 s", err)
        assert.is_true(pulsar.time() - t0 < 30)
        -- and it is gone: the arbiter lists it no more
        assert.truthy(wait_until(function()
          for _, w in ipairs(pulsar.get_actor():info().workers) do
            if w.actor.name == "never-" .. how then return false end
          end
          return true
        end), "the actor that did not start is still there")
      end)
    end
  end
end)

describe("the first heartbeat", function()
  it("is sent at once: a monitor knows each worker's pid when the start resolves", function()
    pulsar.Application{name = "first-notify", workers = 2, concurrency = "process"}:start():wait(60)
    local info = pulsar.send("first-notify", "info"):wait(10)
    assert.are.equal(2, #info.workers)
    for _, w in ipairs(info.workers) do
      assert.is_number(w.actor.pid)
      assert.are_not.equal(info.actor.pid, w.actor.pid)
    end
    pulsar.send("first-notify", "stop")
    assert.truthy(wait_until(function() return gone("first-notify") end))
  end)
end)

describe("a stopping hook that never returns", function()
  for how, stopping in pairs {
    sleeping = function() pulsar.sleep(1e6) end,
    spinning = function() while true do end end,
  } do
    it("(" .. how .. ") keeps a process actor no longer than exit_timeout and a margin", function()
      local p = pulsar.spawn{concurrency = "process", cfg = {exit_timeout = 1}, stopping = stopping}:wait(30)
      local pid = pulsar.send(p, "info"):wait(10).actor.pid
      local t0 = pulsar.time()
      pulsar.send(p, "stop")
      assert.truthy(wait_until(function() return not support.alive(pid) end, 25),
                    "the process outlived its stopping budget")
      assert.is_true(pulsar.time() - t0 < 25)
    end)
  end
end)

describe("a command that raises", function()
  local odd = {
    ["an error whose __tostring raises"] = function()
      error(setmetatable({}, {__tostring = function() error("no text") end}))
    end,
    ["a table without __tostring"] = function() error({code = 7}) end,
    ["nil"] = function() error(nil) end,
    ["an error whose __tostring returns no string"] = function()
      error(setmetatable({}, {__tostring = function() return 42 end}))
    end,
  }
  for what, fn in pairs(odd) do
    it("still gets a reply when it raises " .. what, function()
      local p = pulsar.spawn{concurrency = "thread", commands = {odd = fn}}:wait(20)
      local ok, err = pcall(function() return pulsar.send(p, "odd"):wait(10) end)
      assert.is_false(ok)
      assert.is_string(err)
      assert.matches(p.aid, err)
      assert.is_falsy(err:match("timed out"), err)
      assert.are.equal("pong", pulsar.send(p, "ping"):wait(10))
      pulsar.send(p, "stop")
    end)
  end
end)

describe("failing heartbeats", function()
  it("log one warning per streak, then stop the actor with exit code 1", function()
    local h = support.start(support.quote(support.script([[
      pulsar.Application{name = "deaf", workers = 1, concurrency = "thread", timeout = 1.5,
        cfg = {notify_floor = 0.2, tick = 100},
        -- the monitor refuses every heartbeat
        monitor_start = function() pulsar.command("notify", function() error("refused") end) end,
      }:start():wait(60)
      pulsar.sleep(2.5)
      os.exit(0)
    ]])))
    assert.are.equal(0, h.wait(60), h.err())
    local err = h.err()
    local _, warnings = err:gsub("heartbeat: the notify to %x+ failed", "")
    assert.is_true(warnings >= 1, err)
    assert.matches("heartbeat: no notify answered for [%d.]+ s %(timeout 1.5 s%): stopping", err)
    assert.matches("worker %x+ exited with status 1; replacing it", err)
    -- once per streak: each worker (the first and its replacement) warns once
    local _, stops = err:gsub("no notify answered", "")
    assert.is_true(warnings <= stops + 1, err)
  end)

  it("a periodic_task that raises is logged with its traceback and stops the actor with 1", function()
    local h = support.start(support.quote(support.script([[
      pulsar.Application{name = "faulty", workers = 1, concurrency = "thread", timeout = 1,
        cfg = {notify_floor = 0.2},
        worker_task = function() error("task broke") end,
      }:start():wait(60)
      pulsar.sleep(2)
      os.exit(0)
    ]])))
    assert.are.equal(0, h.wait(60), h.err())
    local err = h.err()
    assert.matches("periodic_task hook failed: [^\n]*task broke\nstack traceback:", err)
    assert.matches("worker %x+ exited with status 1; replacing it", err)
  end)
end)

describe("names", function()
  it("give each worker a unique name, reused by its replacement", function()
    pulsar.Application{name = "named", workers = 2, concurrency = "thread"}:start():wait(60)
    local workers = pulsar.send("named", "info"):wait(10).workers
    assert.are.same({"named-worker-1", "named-worker-2"},
                    {workers[1].actor.unique_name, workers[2].actor.unique_name})
    local second = workers[2].actor.aid
    local info = pulsar.send("named-worker-2", "info"):wait(10)
    assert.are.equal(second, info.actor.aid)
    assert.are.equal("named-worker", info.actor.name)
    pulsar.send("arbiter", "kill_actor", second):wait(30)
    assert.truthy(wait_until(function()
      local ok, i = pcall(function() return pulsar.send("named-worker-2", "info"):wait(5) end)
      return ok and i.actor.aid ~= second
    end), "the replacement did not take the name named-worker-2")
    pulsar.send("named", "stop")
    assert.truthy(wait_until(function() return gone("named") end))
  end)

  it("a shared name reaches the longest-lived running actor of that name", function()
    local twins = {}
    for i = 1, 6 do twins[i] = pulsar.spawn{name = "twin", concurrency = "thread"}:wait(20) end
    for _ = 1, 3 do
      assert.are.equal(twins[1].aid, pulsar.send("twin", "info"):wait(10).actor.aid)
    end
    pulsar.send("arbiter", "kill_actor", twins[1].aid):wait(30)
    assert.are.equal(twins[2].aid, pulsar.send("twin", "info"):wait(10).actor.aid)
    for i = 2, 6 do pulsar.send(twins[i], "stop") end
  end)

  it("a taken unique name is refused", function()
    local p = pulsar.spawn{unique_name = "only-one", concurrency = "thread"}:wait(20)
    assert.has_error(function() pulsar.spawn{unique_name = "only-one"} end)
    pulsar.send(p, "stop")
  end)
end)

describe("a spent restart budget", function()
  it("makes the arbiter exit 1, saying why on the last log line", function()
    local r = support.run(support.quote(support.script([[
      pulsar.Application{name = "hopeless", workers = 1, concurrency = "thread", max_restarts = 1,
                         worker_start = function(w) pulsar.call_later(0.05, function() w:stop(1) end) end,
                        }:start()
    ]])))
    assert.are.equal(1, r.code, r.err)
    local last = r.err:match("([^\n]*)\n$")
    assert.matches("application 'hopeless' gave up: 2 restarts within 10 s", last)
  end)
end)
