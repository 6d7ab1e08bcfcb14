-- Nodes (docs/API.md "Nodes"): arbiters with a name and a TCP mailbox,
-- started here as separate pulsar-lua processes on 127.0.0.1 with one cookie
-- file, linked through a seed into a full mesh. Each node runs NODE (an
-- "echoer" thread actor); a scenario runs as one more node whose script does
-- the calls and prints what a user would see.
local support = require "support"

local quote = support.quote
local dir = support.temp_dir()
local COOKIE = dir .. "/cookie"
support.write_file(COOKIE, "a-cookie-for-the-nodes-spec-0123456789")
os.execute("chmod 600 " .. quote(COOKIE))

local NODE = support.script [[
pulsar.spawn{name = "echoer", concurrency = "thread", commands = {
  shout = function(_, s) return s:upper() .. "@" .. pulsar.node() end,
  sleep = function(_, t) pulsar.sleep(t) return "slept" end,
  call = function(_, target, command, ...) return pulsar.send(target, command, ...):wait(20) end,
  cast = function(_, target, command, ...) return pulsar.cast(target, command, ...) end,
  run_on = function(_, target) return pulsar.send(target, "run", function() return pulsar.node() end):wait(20) end,
  put = function(_, v) got = got or {}; got[#got + 1] = v end,
  got = function() return got or {} end,
  spawn_here = function()
    return pulsar.spawn{name = "helper", concurrency = "thread",
                        commands = {where = function() return pulsar.node() end}}:wait(20)
  end,
}}:wait(20)
print(("node %s at %s"):format(pulsar.node(), pulsar.get_actor().tcp_address))
io.stdout:flush()
]]

local function node_args(name, join, extra)
  return ("--cookie-file %s --node %s --mailbox 127.0.0.1:0%s %s"):format(
    quote(COOKIE), name, join and " --join " .. join or "", extra or "")
end

-- A node running NODE; its handle is start_server's, with address.
local function start_node(name, join, extra)
  return support.start_server(node_args(name, join, extra) .. " " .. quote(NODE),
                              {ready = "node %S+ at (%S+)\n"})
end

-- A node running `source` (which ends with os.exit), in the background.
local function start_scenario(name, join, source, extra)
  return support.start(node_args(name, join, extra) .. " " .. quote(support.script(source)))
end

local function run_scenario(name, join, source, extra)
  return start_scenario(name, join, source, extra).result()
end

local function linked(h, count)
  return support.wait_for(function()
    return select(2, h.log():gsub("node '[^']+' linked", "")) >= count
  end, support.WAIT)
end

describe("nodes", function()
  local a, b
  setup(function()
    a = start_node("a")
    b = start_node("b", a.address)
    assert(linked(b, 1), b.log())
  end)
  teardown(function()
    if b then b.stop() end
    if a then a.stop() end
  end)

  it("three nodes joined through one seed are a full mesh", function()
    local r = run_scenario("c", a.address, [[
      print("c sees", table.concat(pulsar.nodes(), ","))
      for _, other in ipairs{"a", "b"} do
        local info = pulsar.send("arbiter@" .. other, "info"):wait(10)
        local names = {}
        for name, n in pairs(info.nodes) do
          if n.state == "up" then names[#names + 1] = name end
        end
        table.sort(names)
        print(other .. " sees", table.concat(names, ","))
      end
      local info = pulsar.get_actor():info()
      print("b is", info.nodes.b.state, info.nodes.b.address == pulsar.send("arbiter@b", "info"):wait(10).actor.tcp_address)
      print("pulsar.node", pulsar.node())
      local core = require "pulsar.core"
      local deadline, rtt = core.hrtime() + 20, nil
      repeat
        rtt = pulsar.send("arbiter@a", "info"):wait(10).nodes.c.rtt
        if not rtt then pulsar.sleep(0.2) end
      until rtt or core.hrtime() > deadline
      print("rtt", math.type(rtt) == "float" and rtt > 0 and rtt < 5)
      os.exit(0)
    ]])
    assert.equal(0, r.code, r.err)
    assert.matches("c sees\ta,b\n", r.out, 1, true)
    assert.matches("a sees\tb,c\n", r.out, 1, true)
    assert.matches("b sees\ta,c\n", r.out, 1, true)
    assert.matches("b is\tup\ttrue\n", r.out, 1, true)
    assert.matches("pulsar.node\tc\n", r.out, 1, true)
    assert.matches("rtt\ttrue\n", r.out, 1, true)
  end)

  it("an actor on one node calls an actor on another, in order, and its info names its node", function()
    local r = run_scenario("c", a.address, [[
      print(pulsar.send("echoer@a", "call", "echoer@b", "shout", "hi"):wait(10))
      print(pulsar.send("echoer@b", "shout", "direct"):wait(10))
      for i = 1, 200 do assert(pulsar.cast("echoer@b", "put", i)) end
      local got = pulsar.send("echoer@b", "got"):wait(10)
      local ordered = #got == 200
      for i = 1, #got do ordered = ordered and got[i] == i end
      print("in order", ordered)
      local info = pulsar.send("echoer@b", "info"):wait(10)
      print("node", info.actor.node, info.actor.aid:match("@(.*)$"))
      local ok, err = pcall(function() return pulsar.send("nobody@b", "ping"):wait(10) end)
      print("unknown", err)
      ok, err = pcall(function() return pulsar.send("echoer@zz", "ping"):wait(10) end)
      print("no node", err)
      local worker = pulsar.spawn{name = "worker", concurrency = "process", commands = {
        call = function(_, target, command, ...) return pulsar.send(target, command, ...):wait(20) end}}:wait(20)
      print("from a process", pulsar.send(worker, "call", "echoer@b", "shout", "proc"):wait(20))
      print("through three nodes", pulsar.send("echoer@b", "call", "worker@c", "call", "echoer@a", "shout", "back"):wait(20))
      os.exit(0)
    ]])
    assert.equal(0, r.code, r.err)
    assert.matches("HI@b\n", r.out, 1, true)
    assert.matches("DIRECT@b\n", r.out, 1, true)
    assert.matches("in order\ttrue\n", r.out, 1, true)
    assert.matches("node\tb\tb\n", r.out, 1, true)
    assert.matches("unknown\t[^\n]*unknown target 'nobody@b'", r.out)
    assert.matches("no node\t[^\n]*no node 'zz' in the cluster %(linked: a, b%)", r.out)
    assert.matches("from a process\tPROC@b\n", r.out, 1, true)
    assert.matches("through three nodes\tBACK@a\n", r.out, 1, true)
  end)

  it("a proxy made on b works on a: send, cast and run", function()
    local r = run_scenario("c", a.address, [[
      local p = pulsar.send("echoer@b", "spawn_here"):wait(10)
      print("proxy", pulsar.is_proxy(p), p.node, p.aid:match("@(.*)$"))
      print("send", pulsar.send("echoer@a", "call", p, "where"):wait(10))
      print("cast", pulsar.send("echoer@a", "cast", p, "where"):wait(10))
      print("run", pulsar.send("echoer@a", "run_on", p):wait(10))
      os.exit(0)
    ]])
    assert.equal(0, r.code, r.err)
    assert.matches("proxy\ttrue\tb\tb\n", r.out, 1, true)
    assert.matches("send\tb\n", r.out, 1, true)
    assert.matches("cast\ttrue\n", r.out, 1, true)
    assert.matches("run\tb\n", r.out, 1, true)
  end)

  it("spawns an actor on a remote node", function()
    local r = run_scenario("c", a.address, [[
      local p = pulsar.spawn{node = "b", name = "remote", concurrency = "thread",
                             commands = {where = function(_, x) return pulsar.node() .. x end}}:wait(20)
      print("spawned", p.name, p.aid:match("@(.*)$"))
      print("where", pulsar.send(p, "where", "!"):wait(10))
      local workers = pulsar.send("arbiter@b", "info"):wait(10).workers
      local found = false
      for _, w in ipairs(workers) do found = found or w.actor.aid == p.aid end
      print("b manages it", found)
      local ok, err = pcall(function() return pulsar.spawn{node = "zz", name = "x"}:wait(10) end)
      print("no node", err)
      os.exit(0)
    ]])
    assert.equal(0, r.code, r.err)
    assert.matches("spawned\tremote\tb\n", r.out, 1, true)
    assert.matches("where\tb!\n", r.out, 1, true)
    assert.matches("b manages it\ttrue\n", r.out, 1, true)
    assert.matches("no node\t[^\n]*no node 'zz'", r.out)
  end)

  it("refuses a second node with a name already in the cluster, naming both", function()
    local r = support.run(node_args("a", a.address) .. " -e 'print(\"ran\")'")
    assert.equal(1, r.code)
    assert.not_matches("ran", r.out)
    assert.matches("node name 'a' is taken: this node 'a' at " .. a.address:gsub("%p", "%%%0")
                   .. " has it %(refusing the node at 127%.0%.0%.1:%d+%)", r.err)
    r = support.run(node_args("b", a.address) .. " -e 'print(\"ran\")'")
    assert.equal(1, r.code)
    assert.matches("node name 'b' is taken: node 'b' at " .. b.address:gsub("%p", "%%%0")
                   .. " is already a member", r.err)
  end)

  it("a node with the wrong cookie is refused and runs alone; the others go on", function()
    local bad = dir .. "/bad-cookie"
    support.write_file(bad, "another-cookie-0123456789abcdef")
    os.execute("chmod 600 " .. quote(bad))
    local h = support.start(("--cookie-file %s --node x --mailbox 127.0.0.1:0 --join %s %s"):format(
      quote(bad), a.address, quote(support.script [[
        print("x sees", #pulsar.nodes())
        io.stdout:flush()
        os.exit(0)
      ]])))
    local r = h.result()
    assert.equal(0, r.code, r.err)
    assert.matches("x sees\t0\n", r.out, 1, true)
    assert.matches("cannot join the node at " .. a.address:gsub("%p", "%%%0") .. ": refused", r.err)
    assert(support.wait_for(function() return a.log():find("refused 127.0.0.1:%d+: wrong cookie") end, 10), a.log())
    r = run_scenario("c", a.address, [[print(pulsar.send("echoer@b", "shout", "still"):wait(10)) os.exit(0)]])
    assert.matches("STILL@b\n", r.out, 1, true)
  end)

  it("a malformed message from a proved peer closes that link only", function()
    local core = require "pulsar.core"
    local f = pulsar.Future("a link to a")
    core.connect(a.address, function(link, err) if link then f:set_result(link) else f:set_exception(err) end end)
    local link = f:wait(10)
    local cookie = assert(core.load_cookie(COOKIE))
    assert(require("pulsar.auth").prove(link, cookie, 10))
    local closed = pulsar.Future("the close")
    link:set_handler(function() end, function(reason) closed:set_result(reason) end)
    link:send("\xc1 not MessagePack")
    closed:wait(10)
    assert(support.wait_for(function() return a.log():find("undecodable message", 1, true) end, 10), a.log())
    local r = run_scenario("c", a.address, [[print(pulsar.send("echoer@a", "call", "echoer@b", "shout", "fine"):wait(10)) os.exit(0)]])
    assert.matches("FINE@b\n", r.out, 1, true)
  end)

  it("a --join address that does not answer: a clear error, and the node starts alone", function()
    local core = require "pulsar.core"
    local listener = assert(core.listen("127.0.0.1:0", function(link) link:close("no") end))
    local closed = {address = listener.address} -- a port nobody listens on, once closed
    listener:close()
    local t0 = require("pulsar.core").hrtime()
    local r = run_scenario("lonely", closed.address, [[print("alone", #pulsar.nodes()) os.exit(0)]],
                           "--node-timeout 2")
    assert.equal(0, r.code, r.err)
    assert.matches("alone\t0\n", r.out, 1, true)
    assert.matches("cannot join the node at " .. closed.address:gsub("%p", "%%%0") .. ": ", r.err)
    assert.matches("node 'lonely' runs alone", r.err, 1, true)
    assert.truthy(require("pulsar.core").hrtime() - t0 < 15)
  end)

  it("refuses node options without what they need", function()
    local r = support.run("--node a -e ''")
    assert.equal(1, r.code)
    assert.matches("--node needs a TCP --mailbox HOST:PORT", r.err, 1, true)
    r = support.run("--join 127.0.0.1:1 -e ''")
    assert.matches("--join needs --node NAME", r.err, 1, true)
    r = support.run("--node 'a@b' --mailbox 127.0.0.1:0 -e ''")
    assert.matches("--node takes a name of 1 to 64 letters", r.err, 1, true)
    r = support.run("--node a --mailbox 127.0.0.1:0 --node-timeout 0 -e ''")
    assert.matches("--node-timeout takes a number of seconds above 0, not '0'", r.err, 1, true)
    r = support.run("--node a --mailbox 127.0.0.1:0 --cluster http://x -e ''")
    assert.matches("--cluster takes redis://HOST:PORT[/PREFIX], not 'http://x'", r.err, 1, true)
    r = support.run("-e 'print(pulsar.node(), #pulsar.nodes())'")
    assert.equal(0, r.code, r.err)
    assert.equal("nil\t0\n", r.out)
  end)
end)

describe("nodes that fail", function()
  it("kill -9 of a node fails the calls waiting on it within node_timeout plus a second", function()
    local a = start_node("a", nil, "--node-timeout 3")
    local b = start_node("b", a.address, "--node-timeout 3")
    local c = start_scenario("c", a.address, [[
      local core = require "pulsar.core"
      pulsar.monitor_node("b", function(name, why) print("monitor", name, why) io.stdout:flush() end)
      local watcher = pulsar.spawn{name = "watcher", concurrency = "thread",
        start = function()
          pulsar.monitor_node("b", function(name, why) print("actor's monitor", name, why) io.stdout:flush() end)
        end,
        commands = {nodes = function() return table.concat(pulsar.nodes(), ",") end}}:wait(20)
      print("an actor sees", pulsar.send(watcher, "nodes"):wait(10))
      local calls = {}
      for i = 1, 3 do calls[i] = pulsar.send("echoer@b", "sleep", 60) end
      calls[4] = pulsar.send("echoer@a", "call", "echoer@b", "sleep", 60)
      print("pending") io.stdout:flush()
      local t0
      while not calls[1]:done() do pulsar.sleep(0.01) end
      t0 = core.hrtime()
      for i = 1, 4 do
        local ok, err = pcall(calls[i].wait, calls[i], 10)
        print("call", i, ok, err)
      end
      print("a goes on", pulsar.send("echoer@a", "shout", "x"):wait(10))
      pulsar.sleep(0.5)
      os.exit(0)
    ]], "--node-timeout 3")
    assert(c.wait_output("pending\n", support.WAIT), c.err())
    pulsar.sleep(0.3)
    local t0 = require("pulsar.core").hrtime()
    b.kill("KILL", b.pid)
    local r = c.result()
    local elapsed = require("pulsar.core").hrtime() - t0
    a.stop()
    assert.equal(0, r.code, r.err)
    for i = 1, 4 do
      assert.matches("call\t" .. i .. "\tfalse\t[^\n]*node 'b' is down", r.out)
    end
    assert.matches("monitor\tb\t", r.out, 1, true)
    assert.matches("an actor sees\ta,b\n", r.out, 1, true)
    assert.matches("actor's monitor\tb\tits link closed", r.out, 1, true)
    assert.matches("a goes on\tX@a\n", r.out, 1, true)
    assert.truthy(elapsed < 3 + 1 + 2, "took " .. elapsed .. " s") -- + the scenario's own end
  end)

  it("a stopped node (SIGSTOP) is declared down, and linked again after SIGCONT", function()
    local a = start_node("a", nil, "--node-timeout 2")
    local b = start_node("b", a.address, "--node-timeout 2")
    local c = start_scenario("c", a.address, [[
      local core = require "pulsar.core"
      local function has(name)
        for _, n in ipairs(pulsar.nodes()) do if n == name then return true end end
      end
      pulsar.monitor_node("b", function(name, why) print("down", name, why) io.stdout:flush() end)
      print("linked", has("b")) io.stdout:flush()
      local call = pulsar.send("echoer@b", "sleep", 30)
      while has("b") do pulsar.sleep(0.05) end
      local ok, err = pcall(call.wait, call, 1)
      print("pending call", ok, err)
      ok, err = pcall(function() return pulsar.send("echoer@b", "shout", "x"):wait(1) end)
      print("while down", ok, err) io.stdout:flush()
      local deadline = core.hrtime() + 30
      while not has("b") and core.hrtime() < deadline do pulsar.sleep(0.05) end
      print("back", has("b"), pulsar.send("echoer@b", "shout", "again"):wait(10))
      os.exit(0)
    ]], "--node-timeout 2")
    assert(c.wait_output("linked\ttrue\n", support.WAIT), c.err())
    b.kill("STOP", b.pid)
    local down = c.wait_output("while down[^\n]*\n", support.WAIT)
    b.kill("CONT", b.pid)
    local r = c.result()
    a.stop()
    b.stop()
    assert.truthy(down, r.err)
    assert.equal(0, r.code, r.err)
    assert.matches("down\tb\tno answer for 2 s\n", r.out, 1, true)
    assert.matches("pending call\tfalse\t[^\n]*node 'b' is down %(no answer for 2 s%)", r.out)
    assert.matches("while down\tfalse\t[^\n]*node 'b' is down", r.out)
    assert.matches("back\ttrue\tAGAIN@b\n", r.out, 1, true)
  end)
end)

describe("examples/node.lua", function()
  it("two nodes greet each other, and one sees the other go down", function()
    local args = "--cookie-file %s --node %s --mailbox 127.0.0.1:0 %s examples/node.lua"
    local a = support.start_server(args:format(quote(COOKIE), "a", ""), {ready = "node a at (%S+):"})
    local b = support.start_server(args:format(quote(COOKIE), "b", "--join " .. a.address),
                                   {ready = "node b at (%S+):"})
    assert(b.wait_output("hello b, from the greeter on a", support.WAIT), b.err())
    assert(a.wait_output("hello a, from the greeter on b", support.WAIT), a.err())
    b.stop()
    assert(a.wait_output("node b went down: it stopped", support.WAIT), a.out())
    a.stop()
    assert.matches("linked to a\n", b.out(), 1, true)
  end)
end)
