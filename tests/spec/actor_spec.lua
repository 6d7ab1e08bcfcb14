-- Actors (docs/API.md §2 "Actors", "Messages and commands", "Info", "Hooks"):
-- each case runs against process actors and against thread actors, real
-- ones, spawned from this busted process, which is itself an arbiter.
local support = require "support"
local core = require "pulsar.core"

local function spawn(kind, params)
  params.concurrency = kind
  return pulsar.spawn(params):wait(20)
end

local function fails_with(pattern, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

for _, kind in ipairs {"process", "thread"} do
  describe(kind .. " actors", function()
    it("spawn resolves with a proxy once start has run", function()
      local p = spawn(kind, {name = "starter", start = function(actor) actor.started_at = 42 end})
      assert.is_true(pulsar.is_proxy(p))
      assert.are.equal("starter", p.name)
      assert.matches("^%x+$", p.aid)
      assert.are.equal(pulsar.arbiter().address, p.address)
      assert.are.equal(42, pulsar.send(p, "run", function(actor) return actor.started_at end):wait(10))
      pulsar.send(p, "stop")
    end)

    it("answers ping, echo and run", function()
      local p = spawn(kind, {name = "basic"})
      assert.are.equal("pong", pulsar.send(p, "ping"):wait(10))
      local values = {true, false, 0, -7, math.maxinteger, 2.5, "", "bin\0ary",
                      string.rep("z", 100000), {1, 2, {3}}, {a = {b = {c = "deep"}}}}
      for _, v in ipairs(values) do assert.are.same(v, pulsar.send(p, "echo", v):wait(10)) end
      assert.is_nil(pulsar.send(p, "echo", nil):wait(10))
      local count = function(_, ...) return {select("#", ...), ...} end
      assert.are.same({4, 1, nil, 3}, pulsar.send(p, "run", count, 1, nil, 3, nil):wait(10))
      local base = 10
      local got = pulsar.send(p, "run", function(actor, x) return {actor.name, actor.kind, x + base} end, 5):wait(10)
      assert.are.same({"basic", kind, 15}, got)
      local double = pulsar.send(p, "echo", function(x) return 2 * x end):wait(10)
      assert.are.equal(8, double(4))
      pulsar.send(p, "stop")
    end)

    it("reports its info", function()
      local p = spawn(kind, {name = "informed", on_info = function(actor, info) info.custom = actor.name end})
      pulsar.send(p, "ping"):wait(10)
      local info = pulsar.send(p, "info"):wait(10)
      local a = info.actor
      assert.are.same({"informed", p.aid, kind, "running"}, {a.name, a.aid, a.kind, a.state})
      assert.is_true(a.memory_lua > 0)
      assert.is_true(a.uptime >= 0)
      assert.is_true(a.mailbox.received >= 2)
      assert.are.equal("informed", info.custom)
      local mine = pulsar.get_actor():info().actor
      if kind == "process" then
        assert.are_not.equal(mine.pid, a.pid)
        assert.is_true(info.system.rss > 0)
      else
        assert.are.equal(mine.pid, a.pid)
        assert.are_not.equal(mine.thread_id, a.thread_id)
      end
      pulsar.send(p, "stop")
    end)

    it("runs custom commands with the request's actor and caller", function()
      local p = spawn(kind, {name = "greeter", greeting = "hello",
        commands = {greet = function(request, who)
          return ("%s %s from %s to %s"):format(request.actor.greeting, who, request.actor.name, request.caller)
        end}})
      local me = pulsar.get_actor().aid
      assert.are.equal("hello bob from greeter to " .. me, pulsar.send(p, "greet", "bob"):wait(10))
      pulsar.send(p, "stop")
    end)

    it("registers commands with pulsar.command inside the actor", function()
      local p = spawn(kind, {start = function()
        pulsar.command("twice", function(_, x) return x * 2 end)
      end})
      assert.are.equal(42, pulsar.send(p, "twice", 21):wait(10))
      pulsar.send(p, "stop")
    end)

    it("fails the caller's Future with a command's error and the actor's name", function()
      local p = spawn(kind, {name = "faulty", commands = {boom = function() error("it broke") end}})
      fails_with("actor 'faulty' %(" .. p.aid .. "%): .*it broke", function() pulsar.send(p, "boom"):wait(10) end)
      fails_with("actor 'faulty' .*unknown command 'nope'", function() pulsar.send(p, "nope"):wait(10) end)
      assert.are.equal("pong", pulsar.send(p, "ping"):wait(10)) -- still serving
      pulsar.send(p, "stop")
    end)

    it("keeps the original sender through the arbiter's routing", function()
      local a = spawn(kind, {name = "asker", commands = {ask = function(_, other)
        return pulsar.send(other, "whoami"):wait(10)
      end}})
      local b = spawn(kind, {name = "teller", commands = {whoami = function(request) return request.caller end}})
      assert.are.equal(a.aid, pulsar.send(a, "ask", b):wait(10))
      pulsar.send(a, "stop")
      pulsar.send(b, "stop")
    end)

    it("takes no-reply messages with cast and ack = false commands", function()
      local p = spawn(kind, {start = function(actor)
        actor.count = 0
        pulsar.command("count", function(request, n) request.actor.count = request.actor.count + n end, {ack = false})
      end})
      for _ = 1, 100 do assert.is_true(pulsar.cast(p, "count", 2)) end
      assert.are.equal(200, pulsar.send(p, "run", function(actor) return actor.count end):wait(10))
      -- send of an ack = false command resolves at once, without a reply
      assert.is_nil(pulsar.send(p, "count", 1):wait(10))
      pulsar.send(p, "stop")
    end)

    it("lets a command wait on other actors", function()
      local a = spawn(kind, {name = "a"})
      local b = spawn(kind, {name = "b", commands = {relay = function(_, target, x)
        return pulsar.send(target, "echo", x):wait(10)
      end}})
      assert.are.equal("through a", pulsar.send(b, "relay", a, "through a"):wait(10))
      pulsar.send(a, "stop")
      pulsar.send(b, "stop")
    end)

    it("stop resolves at once, runs the stopping hook, and the actor goes away", function()
      local stopped = pulsar.Future()
      pulsar.command("stopped-" .. kind, function(_, name) stopped:set_result(name) end)
      local p = spawn(kind, {name = "stopper", stopping = function(actor)
        return pulsar.send("arbiter", "stopped-" .. kind, actor.name)
      end})
      assert.is_nil(pulsar.send(p, "stop"):wait(1))
      assert.are.equal("stopper", stopped:wait(10))
      assert.truthy(support.wait_for(function()
        return not pcall(function() pulsar.send(p, "ping"):wait(10) end)
      end, 20))
    end)

    it("fails calls at once when the actor dies before replying", function()
      local p = spawn(kind, {name = "doomed", commands = {die = function(request)
        request.actor:stop()
        pulsar.sleep(30)
      end}})
      local t0 = pulsar.time()
      fails_with("actor 'doomed' .* before replying", function() pulsar.send(p, "die"):wait(20) end)
      assert.is_true(pulsar.time() - t0 < 15)
    end)

    it("fails a call sent by name at once when that actor dies before replying", function()
      local name = "doomed_by_name_" .. kind
      spawn(kind, {name = name, commands = {die = function(request)
        request.actor:stop()
        pulsar.sleep(30)
      end}})
      local t0 = pulsar.time()
      fails_with("actor '" .. name .. "' .* before replying", function() pulsar.send(name, "die"):wait(20) end)
      assert.is_true(pulsar.time() - t0 < 15)
    end)

    it("fails the spawn with the error of its start hook", function()
      fails_with("failed to start: .*no good", function()
        spawn(kind, {name = "bad-start", start = function() error("no good") end})
      end)
    end)

    it("spawns from a module", function()
      local dir = support.tmpname()
      os.execute("mkdir -p " .. support.quote(dir))
      support.write_file(dir .. "/spec_actor_mod.lua", [[
        return {start = function(actor) actor.from_module = true end,
                commands = {hello = function(request) return "module " .. tostring(request.actor.from_module) end}}
      ]])
      local saved = package.path
      package.path = dir .. "/?.lua;" .. package.path
      local p = spawn(kind, {module = "spec_actor_mod"})
      package.path = saved
      assert.are.equal("module true", pulsar.send(p, "hello"):wait(10))
      pulsar.send(p, "stop")
    end)

    it("spawns actors from an actor, managed by the arbiter", function()
      local parent = spawn(kind, {name = "parent", commands = {make = function()
        local child = pulsar.spawn{name = "child", concurrency = "thread"}:wait(20)
        return child
      end}})
      local child = pulsar.send(parent, "make"):wait(30)
      assert.is_true(pulsar.is_proxy(child))
      assert.are.equal("pong", pulsar.send(child, "ping"):wait(10))
      local names = {}
      for _, w in ipairs(pulsar.get_actor():info().workers) do names[w.actor.name] = true end
      assert.is_true(names.parent and names.child)
      pulsar.send(child, "stop")
      pulsar.send(parent, "stop")
    end)

    it("answers config get and set", function()
      local p = spawn(kind, {})
      assert.is_true(pulsar.send(p, "config", "set", "answer", 42):wait(10))
      assert.are.equal(42, pulsar.send(p, "config", "get", "answer"):wait(10))
      assert.are.equal(pulsar.cfg.exit_timeout, pulsar.send(p, "config", "get", "exit_timeout"):wait(10))
      pulsar.send(p, "stop")
    end)

    it("is killed with kill_actor, which waits until it is gone", function()
      local p = spawn(kind, {name = "victim"})
      assert.are.equal("killed " .. p.aid, pulsar.send("arbiter", "kill_actor", p.aid):wait(30))
      fails_with("unknown target", function() pulsar.send(p, "ping"):wait(10) end)
    end)

    it("runs CPU-bound functions on its executor", function()
      local p = spawn(kind, {})
      local squares = pulsar.send(p, "run", function(actor)
        local fs = {}
        for i = 1, 4 do fs[i] = actor:executor():submit(function(x) return x * x end, i) end
        return pulsar.gather(table.unpack(fs)):wait(10)
      end):wait(20)
      assert.are.same({1, 4, 9, 16}, squares)
      pulsar.send(p, "stop")
    end)

    it("sends heartbeats to the arbiter and runs periodic_task after each", function()
      local p = spawn(kind, {name = "beating", timeout = 1, cfg = {notify_floor = 0.1},
        start = function(actor) actor.beats = 0 end,
        periodic_task = function(actor) actor.beats = actor.beats + 1 end})
      assert.truthy(support.wait_for(function()
        return pulsar.send(p, "run", function(actor) return actor.beats end):wait(10) >= 2
      end, 20))
      local seen
      for _, w in ipairs(pulsar.get_actor():info().workers) do
        if w.actor.aid == p.aid then seen = w end
      end
      assert.are.equal("running", seen.actor.state)
      assert.is_true(seen.actor.mailbox.sent >= 2)
      pulsar.send(p, "stop")
    end)

    it("refuses a message over the size limit at the sender's side", function()
      local p = spawn(kind, {})
      fails_with("exceeds the limit", function() pulsar.send(p, "echo", string.rep("x", 65 * 1024 * 1024)):wait(30) end)
      assert.are.equal("pong", pulsar.send(p, "ping"):wait(10))
      pulsar.send(p, "stop")
    end)
  end)
end

describe("spawn parameters", function()
  it("refuses a key that would override a built-in field", function()
    fails_with("'state' is a built%-in field", function() pulsar.spawn{state = "x"} end)
    fails_with("'send' is a built%-in field", function() pulsar.spawn{send = 1} end)
  end)

  it("refuses bad hooks, commands and concurrency", function()
    fails_with("hook 'start' must be a function", function() pulsar.spawn{start = 1} end)
    fails_with("commands%.x must be a function", function() pulsar.spawn{commands = {x = 1}} end)
    fails_with("concurrency must be 'process' or 'thread'", function() pulsar.spawn{concurrency = "fiber"} end)
  end)

  it("refuses a function whose upvalue cannot cross, naming the upvalue", function()
    local co = coroutine.create(print)
    fails_with("upvalue 'co'", function() pulsar.spawn{start = function() return co end} end)
  end)

  it("runs the arbiter's on_params hook before spawning", function()
    local hooks = pulsar.arbiter().hooks
    hooks.on_params = function(_, params) params.stamped = "yes" end
    local p = pulsar.spawn{concurrency = "thread"}:wait(20)
    hooks.on_params = nil
    assert.are.equal("yes", pulsar.send(p, "run", function(actor) return actor.stamped end):wait(10))
    pulsar.send(p, "stop")
  end)
end)

describe("the mailbox", function()
  it("listens on a Unix socket in a directory only this user can open", function()
    local address = pulsar.arbiter().address
    local dir = assert(address:match("^unix:(.*)/[^/]+$"))
    local mode = io.popen("stat -c %a " .. support.quote(dir)):read("l")
    assert.are.equal("700", mode)
  end)
end)

describe("messages", function()
  it("fails for an unknown target", function()
    fails_with("unknown target 'nobody'", function() pulsar.send("nobody", "ping"):wait(10) end)
  end)

  it("run in the arbiter itself", function()
    assert.are.equal("pong", pulsar.send("arbiter", "ping"):wait(10))
    assert.are.equal("arbiter", pulsar.send("arbiter", "run", function(a) return a.kind end):wait(10))
  end)

  it("a connection sending an undecodable message is closed; others go on", function()
    local p = pulsar.spawn{concurrency = "process"}:wait(20)
    local closed = pulsar.Future()
    core.connect(pulsar.arbiter().address, function(conn, err)
      assert.is_nil(err)
      conn:set_handler(function() end, function(reason) closed:set_result(reason) end)
      conn:send("\xc1 not msgpack")
    end)
    assert.is_string(closed:wait(10))
    assert.are.equal("pong", pulsar.send(p, "ping"):wait(10))
    pulsar.send(p, "stop")
  end)
end)
