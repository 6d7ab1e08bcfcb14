--- Membership in Redis (pulsar.cluster) against a real redis-server that
-- this spec starts on a free port (no persistence). Each member is a
-- pulsar-lua process of its own that runs the script below and prints its
-- view as it changes; the spec reads those lines and Redis's keys. Where
-- redis-server cannot start, every case is skipped with the reason printed.
local support = require "support"
local core = require "pulsar.core"

local quote = support.quote

-- A member: member.lua URL NAME ADDRESS TTL LIFE [STOP]: registers, prints
-- "ready" (or "error: why" and exits 1), "view: a=ADDR,b=ADDR" at start and
-- on every change, lives LIFE seconds, then stops (STOP = "stop") or just
-- ends (its key then expires).
local MEMBER = [[
local cluster = require "pulsar.cluster"
io.stdout:setvbuf("line")
local url, name, address, ttl, life, mode = ...
local function show(view)
  local names = {}
  for n, a in pairs(view) do names[#names + 1] = n .. "=" .. a end
  table.sort(names)
  print("view: " .. table.concat(names, ","))
end
local m, err = cluster.start{url = url, name = name, address = address, ttl = tonumber(ttl)}
if not m then print("error: " .. err) os.exit(1) end
print("ready")
show(m:members())
m:on_change(show)
pulsar.sleep(tonumber(life))
if mode == "stop" then m:stop() print("stopped") end
]]

local function free_port()
  local sock = assert(core.net_bind{ip = "127.0.0.1", port = 0})
  local port = tonumber(sock.address:match(":(%d+)$"))
  sock:close()
  return port
end

-- A redis-server of our own: {port=, url=, pid=, stop()} or nil, why.
local function start_redis(port)
  port = port or free_port()
  if not os.execute("command -v redis-server > /dev/null 2>&1") then
    return nil, "redis-server is not installed (scripts/setup installs it)"
  end
  local pid_file = support.tmpname(".pid")
  local h = support.start(("--port %d --bind 127.0.0.1 --save '' --appendonly no --pidfile %s")
    :format(port, quote(pid_file)), nil, "redis-server")
  if not h.wait_output("Ready to accept connections", 10) then
    return nil, "redis-server did not start: " .. h.out() .. h.err()
  end
  h.port, h.url = port, ("redis://127.0.0.1:%d"):format(port)
  h.pid = support.wait_for(function() return tonumber(support.read_file(pid_file) or "") end, 5)
  function h.stop()
    if h.pid then h.kill("KILL", h.pid) end
    h.wait(10)
  end
  return h
end

-- redis-cli against that server, its output without the last newline.
local function redis_cli(redis, args)
  local p = io.popen(("redis-cli -p %d %s 2>&1"):format(redis.port, args))
  local out = p:read("a")
  p:close()
  return (out:gsub("\n$", ""))
end

local script = support.script(MEMBER)

-- Starts a member in the background; its handle has pid (from --pid-file).
local function member(url, name, address, ttl, life, mode)
  local pid_file = support.tmpname(".pid")
  local h = support.start(("--pid-file %s %s %s %s %s %d %d %s"):format(
    quote(pid_file), quote(script), quote(url), name, address, ttl, life, mode or ""))
  h.pid = support.wait_for(function() return tonumber(support.read_file(pid_file) or "") end, 10)
  function h.view(pattern, timeout)
    return support.wait_for(function()
      for line in h.out():gmatch("view: ([^\n]*)\n") do
        if line:match(pattern) then return line end
      end
    end, timeout or 10)
  end
  return h
end

local redis, why = start_redis()
if not redis then print("cluster_redis_spec: skipped: " .. why) end
local prefixes = 0

-- A URL with a prefix of its own, so that the cases do not see each other.
local function url()
  prefixes = prefixes + 1
  return ("%s/case%d"):format(redis.url, prefixes)
end

describe("membership in Redis", function()
  teardown(function() if redis then redis.stop() end end)

  before_each(function()
    if not redis then pending("redis-server cannot start: " .. why) end
  end)

  it("registers PREFIX:node:NAME = address with an expiry, and renews it", function()
    if not redis then return end
    local u = url()
    local a = member(u, "a", "127.0.0.1:7001", 2, 4)
    assert.truthy(a.wait_output("ready\n", 10), a.err())
    local prefix = u:match("/([^/]+)$")
    assert.equal("127.0.0.1:7001", redis_cli(redis, "GET " .. prefix .. ":node:a"))
    local ttl = tonumber(redis_cli(redis, "TTL " .. prefix .. ":node:a"))
    assert.truthy(ttl and ttl >= 1 and ttl <= 2, tostring(ttl))
    pulsar.sleep(3) -- past the ttl: renewed meanwhile
    assert.equal("127.0.0.1:7001", redis_cli(redis, "GET " .. prefix .. ":node:a"))
    assert.equal(0, a.result(20).code)
  end)

  it("lets two members see each other", function()
    if not redis then return end
    local u = url()
    local a = member(u, "a", "127.0.0.1:7001", 2, 6)
    assert.truthy(a.wait_output("ready\n", 10), a.err())
    local b = member(u, "b", "127.0.0.1:7002", 2, 6)
    assert.truthy(b.view("^a=127.0.0.1:7001,b=127.0.0.1:7002$"), b.out() .. b.err())
    assert.truthy(a.view("^a=127.0.0.1:7001,b=127.0.0.1:7002$"), a.out() .. a.err())
    a.kill("TERM", a.pid); b.kill("TERM", b.pid)
    a.result(10); b.result(10)
  end)

  it("refuses a name that another address holds, naming both", function()
    if not redis then return end
    local u = url()
    local a = member(u, "a", "127.0.0.1:7001", 2, 6)
    assert.truthy(a.wait_output("ready\n", 10), a.err())
    local r = member(u, "a", "127.0.0.1:7009", 2, 1).result(20)
    assert.equal(1, r.code)
    assert.matches("error: node name 'a' is taken: node 'a' at 127.0.0.1:7001 is registered in "
                   .. u:gsub("%p", "%%%0"), r.out)
    a.kill("TERM", a.pid)
    a.result(10)
  end)

  it("sees a departure after stop()", function()
    if not redis then return end
    local u = url()
    local b = member(u, "b", "127.0.0.1:7002", 3, 10)
    assert.truthy(b.wait_output("ready\n", 10), b.err())
    local a = member(u, "a", "127.0.0.1:7001", 3, 1, "stop")
    assert.truthy(b.view("^a=127.0.0.1:7001,b="), b.out())
    local r = a.result(20)
    assert.matches("stopped", r.out)
    local prefix = u:match("/([^/]+)$")
    assert.equal("0", redis_cli(redis, "EXISTS " .. prefix .. ":node:a"))
    -- gone from b's view within a period (ttl/3), well before the key would expire
    assert.truthy(b.view("^b=127.0.0.1:7002$", 2.5), b.out())
    b.kill("TERM", b.pid)
    b.result(10)
  end)

  it("sees a departure after expiry (a member killed)", function()
    if not redis then return end
    local u = url()
    local b = member(u, "b", "127.0.0.1:7002", 2, 20)
    assert.truthy(b.wait_output("ready\n", 10), b.err())
    local a = member(u, "a", "127.0.0.1:7001", 2, 20)
    assert.truthy(b.view("^a=127.0.0.1:7001,b="), b.out())
    a.kill("KILL", a.pid)
    a.result(10)
    assert.truthy(b.view("^b=127.0.0.1:7002$", 6), b.out())
    b.kill("TERM", b.pid)
    b.result(10)
  end)

  it("keeps its last view when Redis is lost, warns once, and says when it is back", function()
    if not redis then return end
    local own = assert(start_redis())
    local u = own.url .. "/lost"
    local a = member(u, "a", "127.0.0.1:7001", 1, 12)
    assert.truthy(a.wait_output("ready\n", 10), a.err())
    local b = member(u, "b", "127.0.0.1:7002", 1, 12)
    assert.truthy(a.view("^a=127.0.0.1:7001,b=127.0.0.1:7002$"), a.out() .. a.err())
    own.stop()
    assert.truthy(support.wait_for(function()
      return a.err():match("cluster: lost Redis at " .. u:gsub("%p", "%%%0")
                           .. ": membership frozen at its last view")
    end, 10), a.err())
    pulsar.sleep(2)
    local _, warnings = a.err():gsub("cluster: lost Redis", "")
    assert.equal(1, warnings)
    local views = select(2, a.out():gsub("view: ", ""))
    assert.equal(2, views) -- its own, then both: nothing changed while frozen
    local again = assert(start_redis(own.port))
    assert.truthy(support.wait_for(function()
      return a.err():match("cluster: Redis at " .. u:gsub("%p", "%%%0") .. " is back")
    end, 10), a.err())
    assert.truthy(a.view("^a=127.0.0.1:7001,b=127.0.0.1:7002$"), a.out())
    a.kill("TERM", a.pid); b.kill("TERM", b.pid)
    a.result(10); b.result(10)
    again.stop()
  end)

  it("counts a Redis that stops answering (SIGSTOP) as lost, and finds it again", function()
    if not redis then return end
    local own = assert(start_redis())
    local u = own.url .. "/stopped"
    local a = member(u, "a", "127.0.0.1:7001", 1, 12)
    assert.truthy(a.wait_output("ready\n", 10), a.err())
    own.kill("STOP", own.pid)
    local lost = support.wait_for(function() return a.err():match("cluster: lost Redis at") end, 10)
    own.kill("CONT", own.pid)
    assert.truthy(lost, a.err())
    assert.truthy(support.wait_for(function() return a.err():match("is back") end, 10), a.err())
    a.kill("TERM", a.pid)
    a.result(10)
    own.stop()
  end)

  it("says so when Redis cannot be reached at start", function()
    if not redis then return end
    local u = ("redis://127.0.0.1:%d/x"):format(free_port())
    local r = member(u, "a", "127.0.0.1:7001", 2, 1).result(20)
    assert.equal(1, r.code)
    assert.matches("error: cannot reach Redis at " .. u:gsub("%p", "%%%0") .. ": ", r.out)
  end)

  it("links real nodes started with --node ... --cluster", function()
    if not redis then return end
    local u = url()
    local dir = support.temp_dir()
    local node_script = support.script([[
      io.stdout:setvbuf("line")
      print("ready " .. pulsar.node())
      for _ = 1, 400 do
        local names = pulsar.nodes()
        if #names > 0 then print("nodes: " .. table.concat(names, ",")) break end
        pulsar.sleep(0.05)
      end
    ]])
    local function node(name)
      local pid_file = support.tmpname(".pid")
      local h = support.start(("--pid-file %s --cookie-file %s --node %s --mailbox 127.0.0.1:%d "
        .. "--cluster %s --node-timeout 3 %s"):format(quote(pid_file), quote(dir .. "/cookie"),
        name, free_port(), quote(u), quote(node_script)))
      h.pid = support.wait_for(function() return tonumber(support.read_file(pid_file) or "") end, 10)
      return h
    end
    local a = node("a")
    assert.truthy(a.wait_output("ready a\n", 15), a.err())
    local b = node("b")
    assert.truthy(b.wait_output("nodes: a\n", 15), b.out() .. b.err())
    assert.truthy(a.wait_output("nodes: b\n", 15), a.out() .. a.err())
    local prefix = u:match("/([^/]+)$")
    assert.matches("^127%.0%.0%.1:%d+$", redis_cli(redis, "GET " .. prefix .. ":node:b"))
    local dup = node("a")
    local r = dup.result(20)
    assert.equal(1, r.code)
    assert.matches("node name 'a' is taken", r.err .. r.out)
    a.kill("TERM", a.pid); b.kill("TERM", b.pid)
    a.result(15); b.result(15)
    os.execute("rm -rf " .. quote(dir))
  end)

  it("names a bad URL", function()
    if not redis then return end
    local r = member("http://127.0.0.1:1", "a", "127.0.0.1:7001", 2, 1).result(20)
    assert.matches('bad cluster URL "http://127.0.0.1:1"', r.err)
  end)
end)
