-- Hard endings: what is left behind when pulsar-lua ends, whichever way it
-- ends, and actors that must end although their code does not cooperate.
local support = require "support"
local quote, script = support.quote, support.script

local function entries(dir)
  local p = assert(io.popen("ls -A " .. quote(dir)))
  local list = p:read("a")
  p:close()
  return list
end

-- Starts pulsar-lua in the background with TMPDIR=dir; see support.start.
local function start_in(dir, args)
  local h = support.start(args, "TMPDIR=" .. quote(dir))
  return h
end

describe("the private mailbox directory", function()
  local function run(dir, args)
    local cmd = ("TMPDIR=%s %s %s > /dev/null 2>&1"):format(quote(dir), quote(support.exe), args)
    local _, _, code = os.execute(cmd)
    return code
  end

  it("is removed after a plain run", function()
    local dir = support.temp_dir()
    assert.are.equal(0, run(dir, "-e 'x = 1'"))
    assert.are.equal("", entries(dir))
  end)

  it("is removed after an error", function()
    local dir = support.temp_dir()
    assert.are.equal(1, run(dir, "-e 'error(\"boom\")'"))
    assert.are.equal("", entries(dir))
  end)

  it("is removed after os.exit(3)", function()
    local dir = support.temp_dir()
    assert.are.equal(3, run(dir, "-e 'os.exit(3)'"))
    assert.are.equal("", entries(dir))
  end)

  it("is removed after os.exit(3) from inside a task", function()
    local dir = support.temp_dir()
    assert.are.equal(3, run(dir, "-e 'pulsar.async(function() pulsar.sleep(0.05) os.exit(3) end):wait()'"))
    assert.are.equal("", entries(dir))
  end)

  it("is removed after a stop by SIGTERM", function()
    local dir = support.temp_dir()
    local h = start_in(dir, "-e " .. quote([[
      print("pid", pulsar.get_actor():info().actor.pid) io.stdout:flush()
      pulsar.sleep(60)]]))
    local pid = tonumber(h.wait_output("pid\t(%d+)", 30))
    assert.is_not_nil(pid, h.err())
    assert.are_not.equal("", entries(dir))
    h.kill("TERM", pid)
    assert.is_not_nil(h.wait(30), "the arbiter did not stop")
    assert.are.equal("", entries(dir))
  end)
end)

describe("a thread actor at the arbiter's exit", function()
  -- Its loop is idle, so no count hook can reach it, and it ignores the
  -- stop (Lua does not cooperate): only the hard end stops it.
  it("is ended when it ignores its stop past exit_timeout, and the arbiter exits", function()
    local h = support.start("--exit-timeout 1 -e " .. quote([[
      pulsar.spawn{concurrency = "thread", start = function(a)
        a.stop = function() return pulsar.Future("never") end
      end}:wait()
      os.exit(0)]]))
    local code = h.wait(60)
    assert.are.equal(0, code, "the arbiter did not exit: " .. h.err())
    assert.matches("terminated", h.err())
  end)

  it("is abandoned when blocked in a C call, and the arbiter exits naming it", function()
    local h = support.start("--exit-timeout 1 -e " .. quote([[
      local t = pulsar.spawn{name = "sleeper", concurrency = "thread",
                             stopping = function() os.execute("exec sleep 30") end}:wait()
      print("aid", t.aid) io.stdout:flush()
      os.exit(0)]]))
    local code = h.wait(60)
    assert.are.equal(0, code, "the arbiter did not exit: " .. h.err())
    local aid = h.out():match("aid\t(%x+)")
    assert.is_not_nil(aid, h.out())
    assert.matches("ERROR " .. aid .. ": thread actor still running[^\n]*exiting without it", h.err())
  end)
end)

-- The pids of the processes whose parent is `ppid`.
local function children_of(ppid)
  local ps = assert(io.popen("ps -e -o pid= -o ppid="))
  local list = {}
  for pid, parent in ps:read("a"):gmatch("(%d+)%s+(%d+)") do
    if tonumber(parent) == ppid then list[#list + 1] = tonumber(pid) end
  end
  ps:close()
  return list
end

describe("a process actor whose arbiter is killed with SIGKILL", function()
  it("ends within seconds, busy in Lua or blocked in a C call", function()
    local sleeper_file = support.tmpname(".pid")
    local h = support.start(quote(script(([[
      local busy = pulsar.spawn{name = "busy"}:wait()
      local blocked = pulsar.spawn{name = "blocked"}:wait()
      print("busy", pulsar.send(busy, "info"):wait().actor.pid)
      print("blocked", pulsar.send(blocked, "info"):wait().actor.pid)
      print("arbiter", pulsar.get_actor():info().actor.pid)
      io.stdout:flush()
      pulsar.send(busy, "run", function() while true do end end)
      pulsar.send(blocked, "run", function() os.execute("sleep 120 & echo $! > %s; wait") end)
      pulsar.sleep(120)
    ]]):format(sleeper_file))))
    local arbiter = tonumber(h.wait_output("arbiter\t(%d+)", 30))
    assert.is_not_nil(arbiter, "the arbiter did not start: " .. h.err())
    local busy = tonumber(h.out():match("busy\t(%d+)"))
    local blocked = tonumber(h.out():match("blocked\t(%d+)"))
    local sleeper = support.wait_for(function()
      local s = support.read_file(sleeper_file)
      return s and tonumber(s:match("%d+"))
    end, 30)
    assert.is_not_nil(sleeper, "the blocked actor did not start its command")
    pulsar.sleep(0.5) -- the busy actor is in its loop by now
    assert.is_true(support.alive(busy) and support.alive(blocked))
    h.kill("KILL", arbiter)
    local gone = support.wait_for(function()
      return not support.alive(busy) and not support.alive(blocked)
    end, 15)
    -- The command is the user's process: it outlives the actor.
    h.kill("KILL", sleeper)
    for _, pid in ipairs(children_of(blocked)) do h.kill("KILL", pid) end
    if not gone then
      for _, pid in ipairs({busy, blocked}) do if support.alive(pid) then h.kill("KILL", pid) end end
    end
    assert.is_truthy(gone, "a process actor outlived its arbiter by 15 s")
  end)
end)

describe("max_memory", function()
  it("makes a thread actor's VM fail with 'not enough memory', and the arbiter goes on", function()
    -- At most ~300 MB even where the limit is not enforced.
    local r = support.run(quote(script([[
      local t = pulsar.spawn{concurrency = "thread", max_memory = 64 * 1024 * 1024, commands = {
        grow = function()
          local big = {}
          for i = 1, 2e6 do big[i] = ("x"):rep(100) .. i end
          return #big
        end}}:wait()
      print("limit", pulsar.send(t, "info"):wait().actor.memory_limit)
      local ok, err = pcall(function() return pulsar.send(t, "grow"):wait() end)
      print("grow", ok, err)
      print("same actor", pulsar.send(t, "ping"):wait())
      local other = pulsar.spawn{concurrency = "thread"}:wait()
      print("other", pulsar.send(other, "ping"):wait())
      print("arbiter", pulsar.send("arbiter", "ping"):wait())
      os.exit(0)
    ]])))
    assert.are.equal(0, r.code, r.err)
    assert.matches("limit\t67108864\n", r.out)
    assert.matches("grow\tfalse\t[^\n]*not enough memory\n", r.out)
    assert.matches("same actor\tpong\nother\tpong\narbiter\tpong\n", r.out)
  end)

  it("is 1 GiB for a thread actor by default, none for a process actor and the arbiter", function()
    local r = support.run("-e " .. quote([[
      local t = pulsar.spawn{concurrency = "thread"}:wait()
      local p = pulsar.spawn{concurrency = "process"}:wait()
      print(pulsar.send(t, "info"):wait().actor.memory_limit,
            pulsar.send(p, "info"):wait().actor.memory_limit,
            pulsar.get_actor():info().actor.memory_limit)
      local q = pulsar.spawn{concurrency = "process", cfg = {max_memory = 100000000}}:wait()
      print(pulsar.send(q, "info"):wait().actor.memory_limit)
      os.exit(0)]]))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal("1073741824\tnil\tnil\n100000000\n", r.out)
  end)

  it("must be a whole number of bytes", function()
    local r = support.run("-e " .. quote([[pulsar.spawn{max_memory = "lots"}]]))
    assert.are.equal(1, r.code)
    assert.matches("max_memory must be a whole number of bytes above 0", r.err)
  end)
end)
