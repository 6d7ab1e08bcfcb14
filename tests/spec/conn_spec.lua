-- Connections from Lua (host/transport/conn.h's Lua face, host/bind/lconn.c): listen,
-- connect, send, close and stats over a Unix socket, and in-process channels
-- through core.channel_pair_for_test. These specs run inside pulsar-lua and
-- wait on futures, which runs the loop that carries the messages.
local core = require "pulsar.core"
local support = require "support"

local WAIT = 10 -- seconds; generous, for slow machines and sanitizers

local function exists(path)
  return os.execute(("test -e '%s'"):format(path)) == true
end

local temp_dir = support.temp_dir

-- A handler pair that records what arrives and resolves futures as it goes.
local function recorder()
  local r = {messages = {}, closes = {}, closed = pulsar.Future("on_close")}
  function r.on_message(payload, conn)
    r.messages[#r.messages + 1] = payload
    r.conn = conn
    if r.want and #r.messages >= r.want.count and not r.want.future:done() then
      r.want.future:set_result(true)
    end
  end
  function r.on_close(reason)
    r.closes[#r.closes + 1] = reason
    if not r.closed:done() then r.closed:set_result(reason) end
  end
  --- Waits until `count` messages have arrived in all.
  function r.wait_for(count)
    if #r.messages >= count then return end
    r.want = {count = count, future = pulsar.Future(count .. " messages")}
    r.want.future:wait(WAIT)
  end
  return r
end

local function connect(address)
  local f = pulsar.Future("connecting to " .. address)
  core.connect(address, function(conn, err)
    if conn then f:set_result(conn) else f:set_exception(err) end
  end)
  return f:wait(WAIT)
end

-- A listener whose accepted conns wait in a queue for s.accept().
local function serve(address)
  local s = {ready = {}, waiting = {}}
  s.listener = assert(core.listen(address, function(conn)
    local f = table.remove(s.waiting, 1)
    if f then f:set_result(conn) else s.ready[#s.ready + 1] = conn end
  end))
  function s.accept()
    local conn = table.remove(s.ready, 1)
    if conn then return conn end
    local f = pulsar.Future("accept")
    s.waiting[#s.waiting + 1] = f
    return f:wait(WAIT)
  end
  return s
end

--- A connected pair over a fresh socket: client conn, server conn, server.
local function socket_pair(dir, name)
  local server = serve("unix:" .. dir .. "/" .. (name or "pair.sock"))
  local client = connect(server.listener.address)
  return client, server.accept(), server
end

describe("core.listen and core.connect", function()
  local dir
  before_each(function() dir = temp_dir() end)
  after_each(function() os.execute(("rm -rf '%s'"):format(dir)) end)

  it("listens on a Unix socket and removes it when closed", function()
    local path = dir .. "/listen.sock"
    local l = assert(core.listen("unix:" .. path, function() end))
    assert.are.equal("unix:" .. path, l.address)
    assert.is_true(exists(path))
    assert.is_false(l:closed())
    l:close()
    assert.is_true(l:closed())
    assert.is_false(exists(path))
    l:close() -- twice is harmless
  end)

  it("can stop keeping the loop alive and still accept", function()
    local server = serve("unix:" .. dir .. "/unref.sock")
    server.listener:unref()
    local client = connect(server.listener.address)
    local conn = server.accept()
    assert.is_false(conn:closed())
    client:close()
    conn:close()
    server.listener:close()
  end)

  it("refuses a bare path, as pulsar.net and the command line do", function()
    local path = dir .. "/bare.sock"
    local l, err = core.listen(path, function() end)
    assert.is_nil(l)
    assert.is_false(exists(path))
    local _, lua_err = require("pulsar.net").parse_address(path)
    assert.matches(("'%s' is not an address"):format(path), err, 1, true)
    assert.matches("write unix:" .. path .. " for a Unix socket", err, 1, true)
    assert.matches(lua_err, err, 1, true)
    local ok, connect_err = pcall(connect, path)
    assert.is_false(ok)
    assert.matches(lua_err, connect_err, 1, true)
    -- and unix:PATH means the same to both
    local ep = require("pulsar.net").parse_address("unix:" .. path)
    l = assert(core.listen("unix:" .. ep.path, function() end))
    assert.are.equal("unix:" .. path, l.address)
    l:close()
  end)

  it("refuses an address of an unknown scheme", function()
    local l, err = core.listen("tcp://127.0.0.1:9000", function() end)
    assert.is_nil(l)
    assert.matches("'tcp://127.0.0.1:9000' is not an address", err, 1, true)
  end)

  it("refuses a path where a live listener is", function()
    local path = dir .. "/busy.sock"
    local first = assert(core.listen("unix:" .. path, function() end))
    local second, err = core.listen("unix:" .. path, function() end)
    assert.is_nil(second)
    assert.matches("address already in use", err, 1, true)
    first:close()
  end)

  it("reports a failed connect to the callback, naming the address", function()
    local path = dir .. "/nobody.sock"
    local ok, err = pcall(connect, "unix:" .. path)
    assert.is_false(ok)
    assert.matches(path, err, 1, true)
    ok, err = pcall(connect, "tcp://example.org:80")
    assert.is_false(ok)
    assert.matches("tcp://example.org:80", err, 1, true)
  end)

  it("carries messages both ways, as Lua strings", function()
    local client, conn, server = socket_pair(dir)
    local at_client, at_server = recorder(), recorder()
    client:set_handler(at_client.on_message, at_client.on_close)
    conn:set_handler(at_server.on_message, at_server.on_close)
    assert.is_true(client:send("hello"))
    assert.is_true(client:send(""))
    assert.is_true(client:send("\0\1\2\255 binary"))
    at_server.wait_for(3)
    assert.are.same({"hello", "", "\0\1\2\255 binary"}, at_server.messages)
    assert.are.equal(conn, at_server.conn) -- the conn comes second
    assert.is_true(conn:send("world"))
    at_client.wait_for(1)
    assert.are.same({"world"}, at_client.messages)
    local stats = client:stats()
    assert.are.same({sent = 3, received = 1, queued = 0}, stats)
    assert.are.equal(3, conn:stats().received)
    client:close()
    server.listener:close()
  end)

  it("keeps 10k messages sent at once in order", function()
    local client, conn, server = socket_pair(dir)
    local got = recorder()
    conn:set_handler(got.on_message)
    for i = 1, 10000 do client:send(tostring(i)) end
    assert.are.equal(10000, client:stats().sent)
    got.wait_for(10000)
    local in_order = true
    for i = 1, 10000 do
      if got.messages[i] ~= tostring(i) then in_order = false end
    end
    assert.is_true(in_order)
    client:close()
    server.listener:close()
  end)

  it("calls on_close on both sides when one closes", function()
    local client, conn, server = socket_pair(dir)
    local at_client, at_server = recorder(), recorder()
    client:set_handler(at_client.on_message, at_client.on_close)
    conn:set_handler(at_server.on_message, at_server.on_close)
    client:close("done here")
    -- synchronously, before close returns
    assert.are.same({"done here"}, at_client.closes)
    assert.is_true(client:closed())
    assert.are.equal("peer closed the connection", at_server.closed:wait(WAIT))
    assert.is_true(conn:closed())
    local ok, err = client:send("late")
    assert.is_nil(ok)
    assert.are.equal("connection closed", err)
    client:close() -- twice is harmless
    assert.are.same({"done here"}, at_client.closes)
    assert.are.same({sent = 0, received = 0, queued = 0}, client:stats())
    server.listener:close()
  end)

  it("lets a conn close itself from inside on_message", function()
    local client, conn, server = socket_pair(dir)
    local seen, reasons = {}, {}
    local closed = pulsar.Future("on_close")
    conn:set_handler(function(payload, self)
      seen[#seen + 1] = payload
      self:close("enough")
      assert(self:closed())
    end, function(reason)
      reasons[#reasons + 1] = reason
      closed:set_result(true)
    end)
    client:send("one"); client:send("two"); client:send("three")
    closed:wait(WAIT)
    pulsar.sleep(0.05)
    assert.are.same({"one"}, seen)
    assert.are.same({"enough"}, reasons)
    client:close()
    server.listener:close()
  end)

  it("logs a handler's error and goes on delivering", function()
    local client, conn, server = socket_pair(dir)
    local got = recorder()
    local first = true
    conn:set_handler(function(payload, c)
      if first then
        first = false
        error("handler failed on purpose")
      end
      got.on_message(payload, c)
    end)
    core.set_log_level("none") -- the error is logged; keep the output clean
    client:send("boom")
    client:send("fine")
    local ok, err = pcall(got.wait_for, 1)
    core.set_log_level(pulsar.cfg.log_level or "info")
    assert(ok, err)
    assert.are.same({"fine"}, got.messages)
    assert.is_false(conn:closed())
    client:close()
    server.listener:close()
  end)

  it("refuses a message over the limit and stays open", function()
    local client, conn, server = socket_pair(dir)
    local big = string.rep("x", 64 * 1024 * 1024 + 1)
    local ok, err = client:send(big)
    assert.is_nil(ok)
    assert.are.equal("message of 67108865 bytes exceeds the limit of 67108864 bytes", err)
    assert.is_false(client:closed())
    client:close()
    conn:close()
    server.listener:close()
  end)

  it("delivers nothing until a handler is set", function()
    local client, conn, server = socket_pair(dir)
    client:send("waiting")
    pulsar.sleep(0.05)
    local got = recorder()
    conn:set_handler(got.on_message)
    got.wait_for(1)
    assert.are.same({"waiting"}, got.messages)
    client:close()
    server.listener:close()
  end)

  it("keeps a handled conn open when Lua drops it, closes an unhandled one", function()
    local server = serve("unix:" .. dir .. "/gc.sock")
    local client = connect(server.listener.address)
    local got = recorder()
    do
      local conn = server.accept()
      conn:set_handler(got.on_message)
    end
    collectgarbage(); collectgarbage()
    client:send("still there")
    got.wait_for(1)
    assert.are.same({"still there"}, got.messages)

    local watcher = recorder()
    client:set_handler(watcher.on_message, watcher.on_close)
    local client2 = connect(server.listener.address)
    local at_client2 = recorder()
    client2:set_handler(at_client2.on_message, at_client2.on_close)
    server.accept() -- dropped at once, without handlers
    collectgarbage(); collectgarbage()
    assert.are.equal("peer closed the connection", at_client2.closed:wait(WAIT))
    client:close()
    server.listener:close()
  end)
end)

describe("TCP connections", function()
  -- A listener on `address`, a client connected to what it reports, and
  -- the conn the listener accepted.
  local function tcp_pair(listen_on, connect_to)
    local server = serve(listen_on)
    local port = server.listener.address:match(":(%d+)$")
    local client = connect(connect_to and connect_to(port) or server.listener.address)
    return client, server.accept(), server
  end

  it("listen on the port the system chose, and name their peers", function()
    local client, conn, server = tcp_pair("127.0.0.1:0")
    local port = tonumber(server.listener.address:match("^127%.0%.0%.1:(%d+)$"))
    assert.is_true(port > 0)
    assert.are.equal(server.listener.address, client:peer())
    local client_port = tonumber(conn:peer():match("^127%.0%.0%.1:(%d+)$"))
    assert.is_true(client_port > 0 and client_port ~= port)
    local at_client, at_server = recorder(), recorder()
    client:set_handler(at_client.on_message, at_client.on_close)
    conn:set_handler(at_server.on_message, at_server.on_close)
    client:send("over tcp")
    at_server.wait_for(1)
    conn:send(("x"):rep(200000)) -- more than one read
    at_client.wait_for(1)
    assert.are.same({"over tcp", ("x"):rep(200000)}, {at_server.messages[1], at_client.messages[1]})
    client:close()
    assert.are.equal("peer closed the connection", at_server.closed:wait(WAIT))
    server.listener:close()
  end)

  local function hostname()
    local p = io.popen("hostname")
    local name = p:read("l")
    p:close()
    return name
  end

  it("take [IPv6]:PORT, :PORT, localhost:PORT and a host name", function()
    local cases = {
      {":0", nil, "^0%.0%.0%.0:%d+$"},
      {"localhost:0", nil, "^127%.0%.0%.1:%d+$"},
      {"127.0.0.1:0", function(port) return "localhost:" .. port end, nil},
    }
    -- Containers may have no IPv6 loopback, or a host name nothing resolves:
    -- those cases run where the machine has them.
    local probe = core.listen("[::1]:0", function() end)
    if probe then
      probe:close()
      table.insert(cases, {"[::1]:0", nil, "^%[::1%]:%d+$"})
    end
    if os.execute("getent hosts " .. hostname() .. " >/dev/null 2>&1") then
      table.insert(cases, {":0", function(port) return hostname() .. ":" .. port end, nil})
    end
    for _, case in ipairs(cases) do
      local client, conn, server = tcp_pair(case[1], case[2])
      if case[3] then assert.matches(case[3], server.listener.address) end
      local got = recorder()
      conn:set_handler(got.on_message)
      client:send(case[1])
      got.wait_for(1)
      assert.are.same({case[1]}, got.messages)
      client:close()
      server.listener:close()
    end
  end)

  it("refuse malformed addresses, naming them", function()
    for address, why in pairs {
      ["::1:80"] = "write an IPv6 host in brackets",
      ["[::1:80"] = "lacks ']:PORT'",
      ["127.0.0.1:99999"] = "has no valid port",
      ["127.0.0.1:"] = "has no valid port",
      ["[::1]:http"] = "has no valid port",
    } do
      local l, err = core.listen(address, function() end)
      assert.is_nil(l)
      assert.matches(address, err, 1, true)
      assert.matches(why, err, 1, true)
    end
    local ok, err = pcall(connect, "127.0.0.1:0")
    assert.is_false(ok)
    assert.matches("port 0 names no listener", err, 1, true)
  end)

  it("close for their owner at once, and for the peer after a delay", function()
    local client, conn, server = tcp_pair("127.0.0.1:0")
    local at_client, at_server = recorder(), recorder()
    client:set_handler(at_client.on_message, at_client.on_close)
    conn:set_handler(at_server.on_message, at_server.on_close)
    conn:close("go away", 0.3)
    assert.are.same({"go away"}, at_server.closes) -- before close() returned
    assert.is_true(conn:closed())
    local from = core.hrtime()
    assert.are.equal("peer closed the connection", at_client.closed:wait(WAIT))
    assert.is_true(core.hrtime() - from >= 0.25)
    server.listener:close()
  end)

  it("with a linger, turn a bad frame away the same way, and let the owner tell", function()
    local client, conn, server = tcp_pair("127.0.0.1:0")
    local at_client, at_server = recorder(), recorder()
    client:set_handler(at_client.on_message, at_client.on_close)
    conn:set_max_message(1024)
    conn:set_linger(0.3)
    conn:set_handler(at_server.on_message, at_server.on_close)
    local from = core.hrtime()
    client:send(("y"):rep(2000))
    assert.matches("^bad frame: frame of 2000 bytes exceeds", at_server.closed:wait(WAIT))
    at_client.closed:wait(WAIT)
    assert.is_true(core.hrtime() - from >= 0.25)
    assert.are.same({}, at_server.messages)
    server.listener:close()
  end)
end)

describe("core.channel_pair_for_test", function()
  it("joins two conns on this loop", function()
    local a, b = core.channel_pair_for_test()
    local at_a, at_b = recorder(), recorder()
    a:set_handler(at_a.on_message, at_a.on_close)
    b:set_handler(at_b.on_message, at_b.on_close)
    assert.is_true(a:send("ping"))
    at_b.wait_for(1)
    assert.is_true(b:send("pong"))
    at_a.wait_for(1)
    assert.are.same({"ping"}, at_b.messages)
    assert.are.same({"pong"}, at_a.messages)
    assert.are.same({sent = 1, received = 1, queued = 0}, a:stats())
    a:close("bye")
    assert.are.same({"bye"}, at_a.closes)
    assert.are.equal("peer closed the connection", at_b.closed:wait(WAIT))
    assert.is_true(b:closed())
  end)

  it("keeps what was sent before the reader had a handler", function()
    local a, b = core.channel_pair_for_test()
    for i = 1, 100 do a:send("m" .. i) end
    pulsar.sleep(0.02)
    local got = recorder()
    b:set_handler(got.on_message, got.on_close)
    got.wait_for(100)
    assert.are.equal("m1", got.messages[1])
    assert.are.equal("m100", got.messages[100])
    b:close()
    a:close()
  end)

  it("delivers messages sent before a close, then the close", function()
    local a, b = core.channel_pair_for_test()
    local got = recorder()
    b:set_handler(got.on_message, got.on_close)
    a:send("last words")
    pulsar.sleep(0.02) -- sent on that loop turn; a close flushes nothing
    a:close()
    assert.are.equal("peer closed the connection", got.closed:wait(WAIT))
    assert.are.same({"last words"}, got.messages)
  end)

  it("carries 10k messages sent at once, in order", function()
    local a, b = core.channel_pair_for_test()
    local got = recorder()
    b:set_handler(got.on_message)
    for i = 1, 10000 do a:send(tostring(i)) end
    got.wait_for(10000)
    assert.are.equal("1", got.messages[1])
    assert.are.equal("10000", got.messages[10000])
    a:close()
  end)
end)
