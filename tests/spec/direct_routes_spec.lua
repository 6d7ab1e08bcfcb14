-- Direct routes (docs/DESIGN.md "Direct routes", docs/API.md §2 "Messages
-- and commands"): actors of one process post into each other's inboxes,
-- process actors talk on links of their own, and the arbiter's Lua relays
-- none of it; the guarantees are those of every route: order, calls failed
-- at once when the target dies, names that reach their new holder.
local support = require "support"

local function spawn(kind, params)
  params.concurrency = kind
  return pulsar.spawn(params):wait(20)
end

local function kill_actor(aid, timeout)
  return pulsar.send("arbiter", "kill_actor", aid, timeout):wait(timeout + 20)
end

local function relayed()
  return pulsar.get_actor():info().actor.mailbox.relayed
end

-- Commands of the actor that does the work, so that the arbiter only
-- starts it and reads the result.
local caller_commands = {
  calls = function(_, target, n)
    local sum = 0
    for i = 1, n do sum = sum + pulsar.send(target, "add", i, 1):wait(20) end
    return sum
  end,
  casts = function(_, target, n)
    for i = 1, n do assert(pulsar.cast(target, "put", i)) end
    return pulsar.send(target, "report"):wait(20)
  end,
  probe = function(_, target)
    local t0 = pulsar.time()
    local ok, err = pcall(function() return pulsar.send(target, "hang"):wait(60) end)
    return {ok = ok, err = tostring(err), elapsed = pulsar.time() - t0}
  end,
  whoami = function(_, target) return pulsar.send(target, "whoami"):wait(20) end,
}

local receiver_commands = {
  add = function(_, x, y) return x + y end,
  put = function(request, i) -- what arrived, kept on the receiving actor
    local seen = request.actor.seen or {count = 0, in_order = true}
    request.actor.seen = seen
    seen.count = seen.count + 1
    if i ~= seen.count then seen.in_order = false end
  end,
  report = function(request) return request.actor.seen end,
  hang = function() pulsar.sleep(60) end,
  whoami = function(request) return request.actor.aid end,
}

for _, kind in ipairs {"thread", "process"} do
  describe("a direct route between two " .. kind .. " actors", function()
    local caller, receiver

    before_each(function()
      receiver = spawn(kind, {name = "dr-receiver-" .. kind, commands = receiver_commands})
      caller = spawn(kind, {name = "dr-caller-" .. kind, commands = caller_commands})
    end)

    after_each(function()
      for _, p in ipairs {caller, receiver} do pcall(kill_actor, p.aid, 5) end
    end)

    it("carries 10,000 calls, none of them relayed by the arbiter", function()
      local before = relayed()
      assert.are.equal(10000 * 10001 // 2 + 10000, pulsar.send(caller, "calls", receiver, 10000):wait(120))
      assert.are.equal(before, relayed())
    end)

    it("delivers 10,000 casts in the order they were sent", function()
      local before = relayed()
      local got = pulsar.send(caller, "casts", receiver, 10000):wait(120)
      assert.are.same({count = 10000, in_order = true}, got)
      assert.are.equal(before, relayed())
    end)

    it("fails a call waiting on the route at once when its target is killed", function()
      local probe = pulsar.send(caller, "probe", receiver)
      -- the call is on its way once the receiver runs `hang`; give it time
      pulsar.sleep(1)
      if kind == "process" then
        local pid = pulsar.send(receiver, "info"):wait(10).actor.pid
        assert.is_true(os.execute("kill -9 " .. pid))
      else
        kill_actor(receiver.aid, 2)
      end
      local r = probe:wait(30)
      assert.is_false(r.ok)
      assert.matches("actor 'dr%-receiver%-" .. kind .. "' .* before replying", r.err)
      assert.is_true(r.elapsed < 15, "the call failed after " .. r.elapsed .. " s")
    end)

    it("reaches the new holder of a name once the old one has gone", function()
      local name = "dr-named-" .. kind
      local first = spawn(kind, {name = name, commands = receiver_commands})
      assert.are.equal(first.aid, pulsar.send(caller, "whoami", name):wait(20))
      kill_actor(first.aid, 5)
      local second = spawn(kind, {name = name, commands = receiver_commands})
      assert.are.equal(second.aid, pulsar.send(caller, "whoami", name):wait(20))
      kill_actor(second.aid, 5)
    end)
  end)
end

describe("a direct route", function()
  it("from a thread actor reaches a process actor, and back", function()
    local p = spawn("process", {name = "dr-mixed-p", commands = receiver_commands})
    local t = spawn("thread", {name = "dr-mixed-t", commands = caller_commands})
    assert.are.equal(1000 * 1001 // 2 + 1000, pulsar.send(t, "calls", p, 1000):wait(60))
    kill_actor(t.aid, 5)
    kill_actor(p.aid, 5)
  end)

  it("from a process actor to a thread actor is forwarded in C, not relayed by the arbiter's Lua", function()
    local t = spawn("thread", {name = "dr-fwd-t", commands = receiver_commands})
    local p = spawn("process", {name = "dr-fwd-p", commands = caller_commands})
    local mailbox = function() return pulsar.get_actor():info().actor.mailbox end
    local before = mailbox()
    assert.are.equal(1000 * 1001 // 2 + 1000, pulsar.send(p, "calls", t, 1000):wait(60))
    local after = mailbox()
    assert.are.equal(before.relayed, after.relayed)
    assert.is_true(after.forwarded - before.forwarded >= 1000)
    kill_actor(p.aid, 5)
    kill_actor(t.aid, 5)
  end)

  it("fails a process actor's call forwarded to a thread actor at once when that one is killed", function()
    local t = spawn("thread", {name = "dr-fwd-doomed", commands = receiver_commands})
    local p = spawn("process", {name = "dr-fwd-caller", commands = caller_commands})
    local probe = pulsar.send(p, "probe", t)
    pulsar.sleep(1)
    kill_actor(t.aid, 2)
    local r = probe:wait(30)
    assert.is_false(r.ok)
    assert.matches("actor 'dr%-fwd%-doomed' .* before replying", r.err)
    assert.is_true(r.elapsed < 15, "the call failed after " .. r.elapsed .. " s")
    kill_actor(p.aid, 5)
  end)

  it("leaves no socket behind when a process actor is killed", function()
    local p = spawn("process", {name = "dr-socket", commands = receiver_commands})
    local address = pulsar.send(p, "run", function() return require("pulsar.links").address() end):wait(10)
    local path = assert(address:match("^unix:(.*)$"))
    local function exists() return os.execute("test -e " .. support.quote(path)) == true end
    assert.is_true(exists())
    local pid = pulsar.send(p, "info"):wait(10).actor.pid
    assert.is_true(os.execute("kill -9 " .. pid))
    assert.is_true(support.wait_for(function() return not exists() end, 20))
  end)
end)
