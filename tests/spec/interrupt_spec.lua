-- Interrupting a thread actor stuck in Lua (docs/DESIGN.md: "A thread actor
-- stuck in a Lua loop is interrupted through a count hook on its VM"):
-- core.resume, which tells the host which coroutine runs; Thread:interrupt,
-- driven here on a thread actor this spec starts itself through
-- core.spawn_thread and the mailbox protocol (docs/API.md §3); and the arbiter's
-- kill_actor and stop_all, which interrupt a thread actor that does not stop
-- (arbiter.lua's force_end).
local core = require "pulsar.core"
local future = require "pulsar.future"
local support = require "support"

local function fails_with(pattern, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

describe("core.resume", function()
  it("gives what coroutine.resume gives", function()
    local co = coroutine.create(function(a, b)
      local c = coroutine.yield(a + b, "yielded")
      return c, nil, "end"
    end)
    assert.are.same({true, 3, "yielded"}, {core.resume(co, 1, 2)})
    local done = table.pack(core.resume(co, "back"))
    assert.are.same({n = 4, true, "back", nil, "end"}, done)
    assert.are.same({false, "cannot resume dead coroutine"}, {core.resume(co)})
  end)

  it("returns false and the error value, keeping the coroutine's traceback", function()
    local object = setmetatable({}, {__tostring = function() return "an object" end})
    local co = coroutine.create(function() error(object) end)
    local ok, err = core.resume(co)
    assert.is_false(ok)
    assert.are.equal(object, err)
    assert.are.equal("dead", coroutine.status(co))
    local co2 = coroutine.create(function() local x = nil; return x.field end)
    local ok2, err2 = core.resume(co2)
    assert.is_false(ok2)
    assert.matches("attempt to index", err2)
    assert.matches("interrupt_spec", debug.traceback(co2))
  end)

  it("refuses what is not a suspended coroutine, as coroutine.resume does", function()
    fails_with("bad argument #1 to 'resume' %(coroutine expected", function() core.resume(42) end)
    local ok, err = core.resume(coroutine.running())
    assert.are.same({coroutine.resume(coroutine.running())}, {ok, err})
    local inner
    local outer = coroutine.create(function() inner = {core.resume(coroutine.running())} end)
    assert.is_true(core.resume(outer))
    assert.are.same({false, "cannot resume non-suspended coroutine"}, inner)
  end)

  it("nests, and a task's waits and errors go through it", function()
    local co = coroutine.create(function()
      local inner = coroutine.create(function(x) coroutine.yield(x * 2) return x * 3 end)
      local _, a = core.resume(inner, 5)
      local _, b = core.resume(inner)
      return a + b
    end)
    assert.are.same({true, 25}, {core.resume(co)})
    local slept = pulsar.async(function() pulsar.sleep(0.01) return "awake" end)
    assert.are.equal("awake", slept:wait(10))
    local failed = pulsar.async(function() error("task error") end)
    fails_with("task error", function() failed:wait(10) end)
    assert.matches("interrupt_spec", failed:traceback())
  end)
end)

---------------------------------------------------------------------------
-- A thread actor of this spec's own: the arbiter's side of the handshake is
-- played here, so that the spec holds the Thread that core.spawn_thread
-- returns.

-- The loops are bounded only so that a broken interrupt fails the suite
-- instead of hanging it (a stuck thread cannot be joined at exit): 1e10
-- turns of a one-instruction loop take seconds to minutes, far beyond any
-- wait here. Like `while true do end`, they never leave the Lua VM. (The
-- bound is a literal: commands travel by value, without upvalues.)

local COMMANDS = {
  spin = function() for _ = 1, 1e10 do end end,
  -- spins in the command's task after a nested resume has returned: only an
  -- interrupt of the task's coroutine (not of the main state) stops it
  nested_spin = function()
    local inner = coroutine.create(function() coroutine.yield() end)
    require("pulsar.core").resume(inner)
    for _ = 1, 1e10 do end
  end,
  -- spins in the actor's main state: a timer callback runs outside tasks
  spin_in_callback = function()
    require("pulsar.core").timer(0.1, function() for _ = 1, 1e10 do end end)
  end,
  -- work enough for many hooks' counts, in a task and in the main state
  work = function()
    local n = 0
    for i = 1, 1e5 do n = n + i end
    local done = pulsar.Future()
    require("pulsar.core").timer(0, function()
      local m = 0
      for i = 1, 1e5 do m = m + i end
      done:set_result(m)
    end)
    return n + done:wait(5)
  end,
  -- a loop that calls and allocates as it goes
  busy = function()
    local t, deadline = {}, os.clock() + 120
    while os.clock() < deadline do t[#t % 100 + 1] = {tostring(#t)} end
  end,
}

local function reply_to(link, env, result)
  link:send(core.encode {command = "callback", ack = env.id, target = env.sender,
                         sender = pulsar.get_actor().aid, result = result})
end

local function handshake_spec(aid)
  return {aid = aid, name = "stuck", kind = "thread", cfg = pulsar.get_actor().cfg,
          path = package.path, cpath = package.cpath, address = pulsar.arbiter().address,
          commands = COMMANDS, hooks = {}, fields = {}}
end

-- Starts a thread actor; returns a handle: request(command) -> Future,
-- thread, exited (a Future of its exit status), close().
local function start_own_thread_actor()
  local aid, me = core.random_id(), pulsar.get_actor().aid
  local h = {exited = future.Future("the thread's exit"), started = future.Future("the start")}
  local replies, next_id = {}, 0
  local link, thread = core.spawn_thread(aid, function(status) h.exited:set_result(status) end)
  h.thread = thread
  link:set_handler(function(payload)
    local env = core.decode(payload, true)
    if env.command == "callback" then
      local f = replies[env.ack]
      replies[env.ack] = nil
      if f and env.error ~= nil then f:set_exception(env.error) elseif f then f:set_result(env.result) end
    elseif env.command == "pulsar:hello" then
      reply_to(link, env, handshake_spec(aid))
    elseif env.command == "pulsar:started" then
      reply_to(link, env, true)
      h.started:set_result(true)
    elseif env.ack then
      reply_to(link, env, nil) -- heartbeats
    end
  end, function(reason)
    for id, f in pairs(replies) do
      replies[id] = nil
      f:set_exception("closed: " .. tostring(reason))
    end
  end)
  function h.request(command)
    next_id = next_id + 1
    local f = future.Future(("'%s' of the stuck actor"):format(command))
    replies[next_id] = f
    assert(link:send(core.encode {command = command, id = next_id, sender = me, target = aid, ack = true}))
    return f
  end
  function h.close() link:close("the spec is done") end
  h.started:wait(20)
  return h
end

-- Starts `command` and checks that the actor is stuck in it.
local function get_stuck(h, command)
  local stuck = h.request(command)
  fails_with("timed out", function() h.request("ping"):wait(0.5) end)
  return stuck
end

describe("thread:interrupt", function()
  it("makes a command stuck in a loop fail, once; the actor goes on", function()
    local h = start_own_thread_actor()
    local stuck = get_stuck(h, "spin")
    assert.is_true(h.thread:interrupt())
    fails_with("interrupted: the actor is being stopped", function() stuck:wait(10) end)
    -- nothing else is interrupted: neither what runs next in the main state
    -- nor the coroutines it starts
    for _ = 1, 20 do
      assert.are.equal("pong", h.request("ping"):wait(10))
      assert.are.equal(2 * 5000050000, h.request("work"):wait(10))
    end
    h.close()
    assert.are.equal(0, h.exited:wait(20))
  end)

  it("reaches the task's coroutine after a nested resume returned", function()
    local h = start_own_thread_actor()
    local stuck = get_stuck(h, "nested_spin")
    assert.is_true(h.thread:interrupt())
    fails_with("interrupted", function() stuck:wait(10) end)
    assert.are.equal("pong", h.request("ping"):wait(10))
    h.close()
    assert.are.equal(0, h.exited:wait(20))
  end)

  it("reaches a callback looping in the actor's main state", function()
    local h = start_own_thread_actor()
    assert.is_nil(h.request("spin_in_callback"):wait(10))
    pulsar.sleep(0.3) -- the timer has fired
    fails_with("timed out", function() h.request("ping"):wait(0.5) end)
    assert.is_true(h.thread:interrupt())
    assert.are.equal("pong", h.request("ping"):wait(10))
    h.close()
    assert.are.equal(0, h.exited:wait(20))
  end)

  it("stops a loop that calls and allocates, again and again", function()
    local h = start_own_thread_actor()
    for _ = 1, 5 do
      local stuck = get_stuck(h, "busy")
      assert.is_true(h.thread:interrupt())
      fails_with("interrupted", function() stuck:wait(10) end)
    end
    assert.are.equal("pong", h.request("ping"):wait(10))
    h.close()
    assert.are.equal(0, h.exited:wait(20))
  end)

  it("lets a stuck actor take its stop, and says false once its VM is gone", function()
    local h = start_own_thread_actor()
    local stuck = get_stuck(h, "spin")
    h.close() -- the actor would stop, if it could run
    assert.is_false(h.exited:done())
    assert.is_true(h.thread:interrupt())
    assert.are.equal(0, h.exited:wait(20))
    assert.is_true(stuck:done())
    assert.is_false(h.thread:interrupt())
  end)

  it("is called off when the actor's loop runs: an idle actor is not hurt", function()
    local h = start_own_thread_actor()
    for _ = 1, 3 do
      assert.is_true(h.thread:interrupt())
      pulsar.sleep(0.1) -- the loop takes the wake-up before any request
      for _ = 1, 5 do assert.are.equal(2 * 5000050000, h.request("work"):wait(10)) end
    end
    h.close()
    assert.are.equal(0, h.exited:wait(20))
  end)
end)

---------------------------------------------------------------------------
-- The arbiter's stop path: force_end interrupts a thread actor that did not
-- stop in time.

local SPINNER = {concurrency = "thread", name = "spinner",
                 commands = {spin = function() for _ = 1, 1e10 do end end}}

describe("the arbiter stopping a thread actor stuck in Lua", function()
  it("kill_actor interrupts it; the caller's call fails and everything goes on", function()
    local p = pulsar.spawn(SPINNER):wait(20)
    local spinning = pulsar.send(p, "spin")
    fails_with("timed out", function() pulsar.send(p, "ping"):wait(1) end)
    assert.are.equal("killed " .. p.aid, pulsar.send("arbiter", "kill_actor", p.aid, 1):wait(20))
    fails_with("spinner", function() spinning:wait(5) end)
    local q = pulsar.spawn {concurrency = "thread", name = "after"}:wait(20)
    assert.are.equal("pong", pulsar.send(q, "ping"):wait(10))
    assert.are.equal("pong", pulsar.send(q, "run", function()
      return pulsar.send("arbiter", "ping"):wait(10)
    end):wait(10))
    assert.are.equal("killed " .. q.aid, pulsar.send("arbiter", "kill_actor", q.aid, 5):wait(20))
  end)

  it("the arbiter's exit interrupts it too (stop_all)", function()
    local script = support.script([[
      local p = pulsar.spawn{concurrency = "thread", commands = {spin = function() for _ = 1, 1e10 do end end}}:wait(20)
      pulsar.send(p, "spin")
      pulsar.sleep(0.2)
      print("spinning")
      os.exit(3)
    ]])
    local began = core.hrtime()
    local r = support.run("--exit-timeout 1 " .. support.quote(script))
    assert.are.equal("spinning\n", r.out)
    assert.are.equal(3, r.code)
    -- without the interrupt: 1 s, 10 s more for the kills, then the join
    -- waits for the loop to end
    assert.is_true(core.hrtime() - began < 9, r.err)
  end)
end)
