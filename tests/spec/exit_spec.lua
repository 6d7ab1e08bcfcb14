-- When the arbiter ends and with which status (docs/API.md §1, "Exit status").
local support = require "support"
local run, script, quote = support.run, support.script, support.quote

describe("arbiter exit", function()
  it("exits 0 once the main chunk is done and no timer is left", function()
    local r = run(quote(script([[
      pulsar.call_later(0.2, function() print("timer fired") end)
      print("main done")
    ]])))
    assert.are.same({0, "main done\ntimer fired\n"}, {r.code, r.out})
  end)

  it("exits 1 with the message and a traceback naming file and line on an error", function()
    local s = script("local function f()\n  error('boom')\nend\nf()\n")
    local r = run(quote(s))
    assert.are.equal(1, r.code)
    assert.matches("^pulsar%-lua: [^\n]*%.lua:2: boom\nstack traceback:\n", r.err)
    assert.truthy(r.err:find(".lua:4: in main chunk", 1, true), r.err)
  end)

  it("exits 1 on an error raised after the main chunk has waited", function()
    local r = run("-e 'pulsar.sleep(0.05) error(\"late\")'")
    assert.are.equal(1, r.code)
    assert.matches("late", r.err)
  end)

  it("logs an error in a timer callback and goes on", function()
    local r = run(quote(script([[
      pulsar.call_later(0.01, function() error("in timer") end)
      pulsar.sleep(0.1)
      print("still here")
    ]])))
    assert.are.equal(0, r.code)
    assert.are.equal("still here\n", r.out)
    assert.matches("ERROR arbiter: [^\n]*in timer", r.err)
  end)

  it("says so and exits 1 when the main chunk waits for what can never come", function()
    local r = run("-e 'pulsar.Future(\"a reply\"):wait()'")
    assert.are.equal(1, r.code)
    assert.matches("waits for a future that nothing left can complete", r.err)
  end)

  it("os.exit(n) stops the arbiter with status n, running its stopping hook", function()
    local r = run(quote(script([[
      pulsar.arbiter().hooks.stopping = function() print("stopping") end
      pulsar.call_later(5, function() print("never") end)
      os.exit(3)
      print("not reached")
    ]])))
    assert.are.same({3, "stopping\n"}, {r.code, r.out})
  end)

  local signals = {TERM = 15, INT = 2}
  for name, status in pairs(signals) do
    it("stops gracefully on SIG" .. name .. " and exits " .. status, function()
      local h = support.start(quote(script([[
        pulsar.arbiter().hooks.stopping = function()
          return pulsar.async(function() pulsar.sleep(0.05) print("stopped") end)
        end
        print("pid", pulsar.get_actor():info().actor.pid)
        io.stdout:flush()
        pulsar.sleep(60)
      ]])))
      local pid = tonumber(h.wait_output("pid\t(%d+)"))
      assert.is_not_nil(pid, h.err())
      h.kill(name, pid)
      assert.are.equal(status, h.wait(20))
      assert.matches("stopped\n$", h.out())
      assert.is_false(support.alive(pid))
    end)
  end

  it("leaves no actor process behind when the arbiter is killed outright", function()
    local h = support.start(quote(script([[
      local p = pulsar.spawn{concurrency = "process"}:wait(20)
      local t = pulsar.spawn{concurrency = "thread"}:wait(20)
      print("pids", pulsar.get_actor():info().actor.pid, pulsar.send(p, "info"):wait(10).actor.pid)
      io.stdout:flush()
      pulsar.sleep(60)
    ]])))
    local arbiter, child = h.wait_output("pids\t(%d+)\t(%d+)")
    assert.is_not_nil(arbiter, h.err())
    local apid, cpid = h.out():match("pids\t(%d+)\t(%d+)")
    assert.is_true(support.alive(tonumber(cpid)))
    h.kill("KILL", tonumber(apid))
    assert.are.equal(137, h.wait(20))
    assert.truthy(support.wait_for(function() return not support.alive(tonumber(cpid)) end, 20),
                  "the process actor outlived its arbiter")
  end)

  it("stops its actors (running their stopping hooks) on SIGTERM", function()
    local h = support.start(quote(script([[
      for _, kind in ipairs {"process", "thread"} do
        pulsar.spawn{concurrency = kind, stopping = function() print("stopping " .. kind) io.stdout:flush() end}:wait(20)
      end
      print("pid", pulsar.get_actor():info().actor.pid)
      io.stdout:flush()
      pulsar.sleep(60)
    ]])))
    local pid = tonumber(h.wait_output("pid\t(%d+)"))
    assert.is_not_nil(pid, h.err())
    h.kill("TERM", pid)
    assert.are.equal(15, h.wait(30), h.err())
    assert.matches("stopping process", h.out())
    assert.matches("stopping thread", h.out())
  end)
end)
