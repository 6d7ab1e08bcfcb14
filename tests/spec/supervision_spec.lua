-- Supervision (issue "Supervision and lifecycle"): heartbeats and silent
-- actors, monitors and worker pools, restarts within a budget.
local support = require "support"

local function wait_until(check, timeout)
  return support.wait_for(check, timeout or 30)
end

local function workers_of(name)
  local info = pulsar.send(name, "info"):wait(10)
  return info.workers
end

describe("silent actors", function()
  it("are stopped by the arbiter once silent longer than their timeout", function()
    local cfg = pulsar.arbiter().cfg
    local saved = cfg.tick
    cfg.tick = 0.2
    -- notify_floor far above the timeout: this actor never gets to notify.
    local p = pulsar.spawn{concurrency = "thread", timeout = 0.5, cfg = {notify_floor = 100}}:wait(20)
    assert.truthy(wait_until(function()
      return not pcall(function() pulsar.send(p, "ping"):wait(5) end)
    end), "the silent actor was not stopped")
    cfg.tick = saved
  end)

  it("are left alone while they notify", function()
    local cfg = pulsar.arbiter().cfg
    local saved = cfg.tick
    cfg.tick = 0.2
    local p = pulsar.spawn{concurrency = "thread", timeout = 1, cfg = {notify_floor = 0.1}}:wait(20)
    pulsar.sleep(2)
    assert.are.equal("pong", pulsar.send(p, "ping"):wait(10))
    cfg.tick = saved
    pulsar.send(p, "stop")
  end)
end)

describe("stuck actors", function()
  it("a process actor stuck in Lua code gets SIGTERM, then SIGKILL", function()
    local p = pulsar.spawn{concurrency = "process", commands = {spin = function() while true do end end}}:wait(20)
    local pid = pulsar.send(p, "info"):wait(10).actor.pid
    local spinning = pulsar.send(p, "spin")
    local t0 = pulsar.time()
    assert.are.equal("killed " .. p.aid, pulsar.send("arbiter", "kill_actor", p.aid, 0.5):wait(60))
    assert.is_false(support.alive(pid))
    assert.has_error(function() spinning:wait(10) end)
    assert.is_true(pulsar.time() - t0 < 30)
  end)
end)

describe("Application", function()
  it("refuses bad parameters at once", function()
    assert.has_error(function() pulsar.Application{name = "x", workers = -1} end,
                     "Application: workers must be a whole number from 0, not -1")
    assert.has_error(function() pulsar.Application{name = "x", worker_start = 3} end,
                     "Application: worker_start must be a function")
    assert.has_error(function() pulsar.Application{name = "x", concurrency = "fiber"} end,
                     "Application: concurrency must be 'process' or 'thread', not 'fiber'")
    assert.has_error(function() pulsar.Application{workers = 1} end,
                     "Application: name must be a non-empty string")
  end)

  it("takes its workers with it when it ends without stopping them", function()
    local name = "orphaning"
    pulsar.Application{name = name, workers = 2, concurrency = "thread"}:start():wait(60)
    local workers = workers_of(name)
    assert.are.equal(2, #workers)
    -- the monitor's VM closes at once, as if it crashed: no graceful stop
    pulsar.cast(name, "run", function(monitor) monitor:_close() end)
    for _, w in ipairs(workers) do
      assert.truthy(wait_until(function()
        return not pcall(function() pulsar.send(w.actor.aid, "ping"):wait(5) end)
      end), "a worker outlived its monitor")
    end
  end)

  for _, kind in ipairs {"thread", "process"} do
    it("keeps its " .. kind .. " workers alive and lists them in info", function()
      local name = "pool-" .. kind
      local monitor = pulsar.Application{
        name = name, workers = 2, concurrency = kind,
        worker_start = function(worker) worker.extra.ready = true end,
      }:start():wait(60)
      assert.are.equal(name, monitor.name)
      local workers = workers_of(name)
      assert.are.equal(2, #workers)
      local info = pulsar.send(name, "info"):wait(10)
      assert.are.equal("monitor", info.actor.kind)
      -- a monitor shares the arbiter's process, thread and loop
      local mine = pulsar.get_actor():info().actor
      assert.are.same({mine.pid, mine.thread_id}, {info.actor.pid, info.actor.thread_id})
      -- kill one worker: the monitor replaces it at once
      local victim = workers[1].actor.aid
      pulsar.send("arbiter", "kill_actor", victim):wait(30)
      assert.truthy(wait_until(function()
        local now = workers_of(name)
        if #now ~= 2 then return false end
        for _, w in ipairs(now) do if w.actor.aid == victim then return false end end
        return true
      end), "the killed worker was not replaced")
      assert.truthy(pulsar.get_actor():info().monitors[name])
      pulsar.send(name, "stop")
      assert.truthy(wait_until(function()
        return not pcall(function() pulsar.send(name, "ping"):wait(5) end)
      end))
    end)
  end

  it("replaces a process worker killed by a signal, by pid", function()
    local monitor = pulsar.Application{name = "by-pid", workers = 1, concurrency = "process",
                                       cfg = {notify_floor = 0.1}, timeout = 1}:start():wait(60)
    local pid
    assert.truthy(wait_until(function()
      local w = workers_of("by-pid")[1]
      pid = w and w.actor.pid
      return pid
    end))
    os.execute("kill -9 " .. pid)
    assert.truthy(wait_until(function()
      local w = workers_of("by-pid")[1]
      return w and w.actor.pid and w.actor.pid ~= pid
    end), "no new worker process")
    pulsar.send(monitor, "stop")
  end)

  it("runs the worker hooks in the monitor itself with workers = 0", function()
    pulsar.Application{name = "solo", workers = 0,
                       worker_start = function(m) m.extra.solo = m.kind end}:start():wait(30)
    local info = pulsar.send("solo", "info"):wait(10)
    assert.are.equal("monitor", info.extra.solo)
    assert.are.same({}, info.workers)
    pulsar.send("solo", "stop")
  end)

  it("stops a crash-looping application past its restart budget", function()
    local ok, err = pcall(function()
      pulsar.Application{name = "crashy", workers = 1, concurrency = "thread", max_restarts = 2,
                         worker_start = function() error("cannot start") end}:start():wait(60)
    end)
    assert.is_false(ok)
    assert.matches("crashy", err)
    assert.truthy(wait_until(function()
      return not pcall(function() pulsar.send("crashy", "ping"):wait(5) end)
    end))
    -- the arbiter goes on
    assert.are.equal("pong", pulsar.send("arbiter", "ping"):wait(5))
  end)

  it("stops when its workers keep dying after it started", function()
    pulsar.Application{name = "dying", workers = 1, concurrency = "thread", max_restarts = 2,
                       restart_period = 60,
                       worker_start = function(w) pulsar.call_later(0.05, function() w:stop(1) end) end,
                      }:start():wait(60)
    assert.truthy(wait_until(function()
      return not pcall(function() pulsar.send("dying", "ping"):wait(5) end)
    end), "the application was not stopped")
  end)
end)

describe("Application pools", function()
  it("cull surplus workers when the pool shrinks", function()
    pulsar.Application{name = "shrinking", workers = 2, concurrency = "thread",
                       cfg = {tick = 0.2}}:start():wait(60)
    assert.are.equal(2, #workers_of("shrinking"))
    pulsar.send("shrinking", "run", function(monitor) monitor.app.workers = 1 end):wait(10)
    assert.truthy(wait_until(function() return #workers_of("shrinking") == 1 end),
                  "the surplus worker was not culled")
    pulsar.send("shrinking", "stop")
  end)

  it("stop their workers, running each stopping hook, when the arbiter gets SIGTERM", function()
    local h = support.start(support.quote(support.script([[
      pulsar.Application{name = "app", workers = 2, concurrency = "process",
        worker_stopping = function(worker) print("worker stopping " .. worker.aid) io.stdout:flush() end,
      }:start():wait(60)
      print("pid", pulsar.get_actor():info().actor.pid)
      io.stdout:flush()
    ]])))
    local pid = tonumber(h.wait_output("pid\t(%d+)", 60))
    assert.is_not_nil(pid, h.err())
    h.kill("TERM", pid)
    assert.are.equal(15, h.wait(60), h.err())
    local _, stops = h.out():gsub("worker stopping", "")
    assert.are.equal(2, stops, h.out() .. h.err())
  end)
end)
