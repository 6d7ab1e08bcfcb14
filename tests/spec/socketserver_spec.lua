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
      local held, open_by = {}, {}
      for i = 1, 4 do
        local aid, _, stream = ask(app.address)
        held[i] = stream
        open_by[aid] = (open_by[aid] or 0) + 1
      end
      for _, aid in ipairs(aids) do
        local server = worker_info(aid).server
        assert.are.equal(app.address, server.address)
        assert.are.equal(open_by[aid] or 0, server.open)
        assert.is_true(server.processed >= seen[aid] + (open_by[aid] or 0))
      end
      for _, stream in ipairs(held) do stream:close() end
      assert.is_true(wait_until(function()
        for _, aid in ipairs(aids) do
          if worker_info(aid).server.open ~= 0 then return false end
        end
        return true
      end), "closed connections still counted as open")
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
