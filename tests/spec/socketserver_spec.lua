-- pulsar.apps.SocketServer (lua/pulsar/apps/socket.lua): a monitor binds
-- once, its workers (processes or threads) accept on the same socket; real
-- workers, real sockets, real signals.
local support = require "support"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers

local function wait_until(check) return support.wait_for(check, WAIT) and true or false end

-- A protocol answering each line with "AID PID line" of the worker that
-- serves it, half a second later for a line starting with "slow". When its
-- server stops, a connection idle after an answer closes at once; one
-- waiting for its first answer, or for a slow one, closes after it.
local function whoami()
  return function()
    local p = {}
    function p.connection_made(self, t) self.t = t end
    function p.data_received(self, data)
      self.busy = true
      local function answer()
        local actor = pulsar.get_actor()
        self.t:write(("%s %d %s"):format(actor.aid, require("pulsar.core").pid(), data))
        self.busy, self.answered = false, true
        if self.stopping then self.t:close() end
      end
      if data:match("^slow") then pulsar.call_later(0.5, answer) else answer() end
    end
    function p.server_stopping(self)
      self.stopping = true
      if not self.busy and self.answered then self.t:close() end
    end
    return p
  end
end

local function start(params)
  params.bind = params.bind or "127.0.0.1:0"
  params.protocol = params.protocol or whoami()
  local app = pulsar.apps.SocketServer(params)
  app.proxy = app:start():wait(WAIT * 2)
  return app
end

-- Stops the application gracefully and waits until its monitor is gone.
local function stop(app)
  pulsar.send("arbiter", "kill_actor", app.proxy.aid):wait(WAIT)
end

-- Connects, asks, returns the answer's aid and pid and the open stream.
local function ask(address, text)
  local stream = pulsar.open_connection(address):wait(WAIT)
  stream:write((text or "hello") .. "\n")
  local line = stream:readline():wait(WAIT)
  assert.truthy(line, "no answer from " .. address)
  local aid, pid = line:match("^(%x+) (%d+) ")
  return aid, tonumber(pid), stream
end

local function worker_info(aid) return pulsar.send(aid, "info"):wait(WAIT) end

for _, kind in ipairs {"process", "thread"} do
  describe("SocketServer with " .. kind .. " workers", function()
    it("spreads connections over every worker, which report them in info", function()
      local app = start{name = "spread-" .. kind, workers = 2, concurrency = kind}
      assert.matches("^127%.0%.0%.1:%d+$", app.address)
      assert.are.same({app.address}, app.addresses)
      -- both workers accept on the one socket
      local pids, seen, count = {}, {}, 0
      for _ = 1, 300 do
        local aid, pid, stream = ask(app.address)
        stream:close()
        seen[aid], pids[pid], count = (seen[aid] or 0) + 1, true, count + 1
        local n = 0
        for _ in pairs(seen) do n = n + 1 end
        if n == 2 then break end
      end
      local aids = {}
      for aid in pairs(seen) do aids[#aids + 1] = aid end
      assert.are.equal(2, #aids, "every connection went to one worker")
      local mine = require("pulsar.core").pid()
      for pid in pairs(pids) do
        if kind == "process" then assert.are_not.equal(mine, pid) else assert.are.equal(mine, pid) end
      end
      -- connections held open are counted as open by the worker holding them
      local function all_open(expected)
        return wait_until(function()
          for _, aid in ipairs(aids) do
            if worker_info(aid).server.open ~= (expected[aid] or 0) then return false end
          end
          return true
        end)
      end
      assert.is_true(all_open({}), "closed connections still counted as open")
      local held, open_by = {}, {}
      for i = 1, 4 do
        local aid, _, stream = ask(app.address)
        held[i] = stream
        open_by[aid] = (open_by[aid] or 0) + 1
      end
      assert.is_true(all_open(open_by), "held connections not counted as open")
      for _, aid in ipairs(aids) do
        local server = worker_info(aid).server
        assert.are.equal(app.address, server.address)
        assert.is_true(server.processed >= seen[aid] + (open_by[aid] or 0))
      end
      for _, stream in ipairs(held) do stream:close() end
      assert.is_true(all_open({}), "closed connections still counted as open")
      stop(app)
    end)

    it("finishes a connection in flight when stopped gracefully", function()
      local app = start{name = "graceful-" .. kind, workers = 1, concurrency = kind}
      local idle = pulsar.open_connection(app.address):wait(WAIT)
      idle:write("first\n")
      assert.truthy(idle:readline():wait(WAIT))
      local stream = pulsar.open_connection(app.address):wait(WAIT)
      stream:write("slow question\n")
      pulsar.sleep(0.1) -- it has arrived; the answer is 0.5 s away
      local order = {}
      local idle_end = pulsar.async(function()
        assert.is_nil(idle:read():wait(WAIT))
        order[#order + 1] = "idle closed"
      end)
      local stopped = pulsar.send("arbiter", "kill_actor", app.proxy.aid)
      local line = stream:readline():wait(WAIT)
      order[#order + 1] = "answered"
      assert.matches("^%x+ %d+ slow question$", line)
      assert.is_nil(stream:read():wait(WAIT))
      idle_end:wait(WAIT)
      -- the idle connection was closed when the stop began (server_stopping),
      -- not when the worker ended after the answer
      assert.are.same({"idle closed", "answered"}, order)
      -- and then the port is gone
      stopped:wait(WAIT)
      assert.has_error(function() pulsar.open_connection(app.address):wait(WAIT) end)
    end)
  end)
end

describe("SocketServer", function()
  it("replaces a worker killed by SIGKILL while the port keeps answering", function()
    local app = start{name = "killed", workers = 2, concurrency = "process"}
    local victim
    for _ = 1, 20 do
      local _, pid, stream = ask(app.address)
      stream:close()
      victim = pid
    end
    os.execute("kill -9 " .. victim)
    -- every connection is answered, by the survivor, then by its new peer too
    local pids, fresh, deadline = {}, 0, pulsar.time() + WAIT
    repeat
      local _, pid, stream = ask(app.address)
      stream:close()
      if not pids[pid] and pid ~= victim then fresh = fresh + 1 end
      pids[pid] = true
    until fresh >= 2 or pulsar.time() > deadline
    assert.is_nil(pids[victim])
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.are.equal(2, n, "the killed worker was not replaced by one that accepts")
    stop(app)
  end)

  it("recycles workers past max_requests without refusing a connection", function()
    local app = start{name = "recycled", workers = 2, concurrency = "process", max_requests = 3}
    local aids, answered = {}, 0
    for i = 1, 30 do
      local aid, _, stream = ask(app.address, "request " .. i)
      stream:close()
      aids[aid] = true
      answered = answered + 1
    end
    assert.are.equal(30, answered)
    local n = 0
    for _ in pairs(aids) do n = n + 1 end
    assert.is_true(n >= 4, ("only %d workers served 30 connections"):format(n))
    -- the recycling counts against no restart budget: the pool is whole
    assert.is_true(wait_until(function()
      return #pulsar.send(app.proxy, "info"):wait(WAIT).workers == 2
    end))
    -- each worker drew its own limit around 3
    assert.is_true(wait_until(function()
      local aid, _, stream = ask(app.address)
      stream:close()
      local ok, info = pcall(worker_info, aid)
      return ok and info.server.max_requests >= 1
    end))
    stop(app)
  end)

  it("closes connections idle longer than keep_alive", function()
    local app = start{name = "idle", workers = 1, concurrency = "thread", keep_alive = 0.3}
    local _, _, stream = ask(app.address)
    local t0 = pulsar.time()
    assert.is_nil(stream:read():wait(WAIT))
    assert.is_true(pulsar.time() - t0 >= 0.2)
    stop(app)
  end)

  it("serves a Unix socket from process workers, and removes it at the end", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir -m 700 '%s'"):format(dir)))
    local path = dir .. "/app.sock"
    local app = start{name = "on-unix", workers = 2, concurrency = "process", bind = "unix:" .. path}
    assert.are.equal("unix:" .. path, app.address)
    local aid, _, stream = ask(app.address)
    stream:close()
    assert.matches("^%x+$", aid)
    stop(app)
    assert.is_true(wait_until(function() return io.open(path) == nil end))
    os.execute(("rm -rf '%s'"):format(dir))
  end)

  it("is served by the monitor itself with workers = 0", function()
    local app = start{name = "solo-server", workers = 0}
    local aid, _, stream = ask(app.address)
    stream:close()
    local info = pulsar.send(app.proxy, "info"):wait(WAIT)
    assert.are.equal(info.actor.aid, aid)
    assert.are.equal(1, info.server.processed)
    stop(app)
  end)

  it("refuses bad settings at once", function()
    local function fails(pattern, params)
      local ok, err = pcall(pulsar.apps.SocketServer, params)
      assert.is_false(ok)
      assert.matches(pattern, tostring(err))
    end
    fails("SocketServer: protocol must be a function", {name = "x"})
    fails("bind: 'nowhere' is not an address", {name = "x", protocol = whoami(), bind = "nowhere"})
    fails("SocketServer: max_requests must be a whole number", {name = "x", protocol = whoami(), max_requests = 1.5})
    fails("SocketServer: keep_alive must be a number", {name = "x", protocol = whoami(), keep_alive = -1})
    fails("Application: workers must be a whole number", {name = "x", protocol = whoami(), workers = -2})
    -- an address in use fails the start, with the reason
    local app = start{name = "first", workers = 0}
    local ok, err = pcall(function()
      pulsar.apps.SocketServer{name = "second", workers = 0, protocol = whoami(), bind = app.address}:start():wait(WAIT)
    end)
    assert.is_false(ok)
    assert.matches("EADDRINUSE", err)
    stop(app)
  end)
end)

-- A SocketServer in a process of its own, whose log (stderr) the specs
-- read. Its protocol answers lines: "big N" with N bytes and "\nend\n" in
-- one write, "raise" by raising in data_received, "raise at eof" by
-- raising in eof_received, "fail next" by making the next connection's
-- connection_made raise, anything else with "echo LINE".
local ODD_SERVER = [[
local fail_next = false
local app = pulsar.apps.SocketServer{
  name = "odd", bind = "127.0.0.1:0", workers = 1, keep_alive = tonumber(arg[1]),
  protocol = function()
    local p = {}
    function p.connection_made(self, t)
      self.t = t
      if fail_next then fail_next = false error("connection_made failed on purpose") end
    end
    function p.data_received(self, data)
      local n = data:match("^big (%d+)")
      if n then return self.t:write(string.rep("y", tonumber(n)) .. "\nend\n") end
      if data:match("^raise at eof") then self.raise_at_eof = true
      elseif data:match("^raise") then error("data_received failed on purpose")
      elseif data:match("^fail next") then fail_next = true end
      self.t:write("echo " .. data)
    end
    function p.eof_received(self)
      if self.raise_at_eof then error("eof_received failed on purpose") end
      return true
    end
    return p
  end,
}
app:start():wait()
print("serving " .. app.address)
io.stdout:flush()
]]

describe("SocketServer protocols", function()
  -- keep_alive 1 s for the slow reader, a minute for the others
  local servers = {}
  local function start_odd(keep_alive)
    local pid_file = support.tmpname(".pid")
    local h = support.start("--pid-file " .. support.quote(pid_file) .. " " ..
                            support.quote(support.script(ODD_SERVER)) .. " " .. keep_alive)
    h.address = h.wait_output("serving (%S+)\n", WAIT)
    assert(h.address, "the server did not start: " .. h.err())
    h.pid = tonumber(support.read_file(pid_file))
    servers[#servers + 1] = h
    return h
  end
  local quick, server
  setup(function() quick, server = start_odd(1), start_odd(60) end)
  teardown(function()
    for _, h in ipairs(servers) do
      if h.pid then h.kill("TERM", h.pid) h.wait(WAIT) end
    end
  end)

  local function connect(h) return pulsar.open_connection((h or server).address):wait(WAIT) end

  local function ask(stream, line)
    stream:write(line .. "\n")
    return stream:readline():wait(WAIT)
  end

  it("send a big answer whole to a reader slower than keep_alive allows", function()
    local stream = connect(quick)
    stream:write("big 16777216\n")
    local got = 0
    while true do -- about 2 MB/s: 16 MiB take 8 s, keep_alive is 1 s
      local data = stream:read(65536):wait(WAIT)
      if not data then break end
      got = got + #data
      if got >= 16777216 + 5 then break end
      pulsar.sleep(0.03)
    end
    stream:close()
    assert.are.equal(16777216 + 5, got)
  end)

  it("close a connection whose data_received raises, log why, and serve on", function()
    local stream, other = connect(), connect()
    assert.are.equal("echo hello", ask(other, "hello"))
    stream:write("raise\n")
    assert.is_nil(stream:read():wait(WAIT)) -- closed (keep_alive is a minute)
    assert.is_true(support.wait_for(function()
      return server.err():find("data_received %(the connection is closed%): .-data_received failed " ..
                               "on purpose\nstack traceback:")
    end, WAIT) ~= nil, server.err())
    assert.are.equal("echo again", ask(other, "again"))
    assert.are.equal("echo new", ask(connect(), "new"))
  end)

  it("close a connection whose eof_received or connection_made raises", function()
    local stream = connect()
    assert.are.equal("echo raise at eof", ask(stream, "raise at eof"))
    stream:write_eof()
    assert.is_nil(stream:read():wait(WAIT))
    assert.is_true(support.wait_for(function()
      return server.err():find("eof_received failed on purpose", 1, true)
    end, WAIT) ~= nil, server.err())
    assert.are.equal("echo fail next", ask(connect(), "fail next"))
    local failed = connect()
    assert.is_nil(failed:read():wait(WAIT))
    assert.is_true(support.wait_for(function()
      return server.err():find("connection_made failed on purpose", 1, true)
    end, WAIT) ~= nil, server.err())
    assert.are.equal("echo still", ask(connect(), "still"))
  end)
end)
