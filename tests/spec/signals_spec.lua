-- Stop signals, --pid-file and --log-level, seen from outside the process
-- (docs/API.md §1): each spec starts a real pulsar-lua, signals it as a shell
-- would and looks at its output, its exit status and what it leaves behind.
local support = require "support"
local run, script, quote = support.run, support.script, support.quote

-- A script that prints its pid, then waits to be stopped; its stopping hook
-- prints "stopped" once it has run.
local WAITING_ARBITER = [[
  pulsar.arbiter().hooks.stopping = function()
    return pulsar.async(function() pulsar.sleep(0.05) print("stopped") end)
  end
  print("pid", pulsar.get_actor():info().actor.pid)
  io.stdout:flush()
  pulsar.sleep(60)
]]

--- Starts pulsar-lua with `options` and `source`; returns the handle and the
-- arbiter's pid once the script has printed it.
local function start_arbiter(source, options)
  local h = support.start((options or "") .. " " .. quote(script(source)))
  local pid = tonumber(h.wait_output("pid\t(%d+)", 30))
  assert.is_not_nil(pid, "the arbiter did not start: " .. h.err())
  return h, pid
end

-- The pids of every process below `root`, from ps's whole table.
local function descendants(root)
  local children = {}
  local ps = assert(io.popen("ps -e -o pid= -o ppid="))
  for pid, ppid in ps:read("a"):gmatch("(%d+)%s+(%d+)") do
    children[ppid] = children[ppid] or {}
    table.insert(children[ppid], pid)
  end
  ps:close()
  local found, queue = {}, {tostring(root)}
  while #queue > 0 do
    for _, child in ipairs(children[table.remove(queue)] or {}) do
      found[#found + 1] = tonumber(child)
      queue[#queue + 1] = child
    end
  end
  return found
end

local function all_gone(pids)
  for _, pid in ipairs(pids) do
    if support.alive(pid) then return false end
  end
  return true
end

-- The pid of a process that has already exited.
local function dead_pid()
  local sh = assert(io.popen("sh -c 'echo $$'"))
  local pid = tonumber(sh:read("a"))
  sh:close()
  assert.truthy(support.wait_for(function() return not support.alive(pid) end, 10))
  return pid
end

describe("stop signals", function()
  local statuses = {QUIT = 3, ABRT = 6, HUP = 1}
  for name, status in pairs(statuses) do
    it("SIG" .. name .. " stops the arbiter gracefully; it exits " .. status, function()
      local h, pid = start_arbiter(WAITING_ARBITER)
      h.kill(name, pid)
      assert.are.equal(status, h.wait(30), h.err())
      assert.matches("stopped\n$", h.out())
      assert.is_false(support.alive(pid))
    end)
  end

  it("a second SIGINT while the stopping hook runs ends the process at once with 2", function()
    local h, pid = start_arbiter([[
      pulsar.arbiter().hooks.stopping = function()
        return pulsar.async(function()
          print("hook started")
          io.stdout:flush()
          pulsar.sleep(30)
          print("hook finished")
        end)
      end
      print("pid", pulsar.get_actor():info().actor.pid)
      io.stdout:flush()
      pulsar.sleep(60)
    ]], "--exit-timeout 60")
    h.kill("INT", pid)
    assert.truthy(h.wait_output("hook started", 30), "the stopping hook did not start")
    h.kill("INT", pid)
    -- Well below the hook's 30 s: the second signal did not wait for it.
    assert.are.equal(2, h.wait(20), h.err())
    assert.is_nil(h.out():find("hook finished", 1, true))
  end)

  it("leaves no process behind after SIGTERM of an arbiter with process and thread actors", function()
    local h, pid = start_arbiter([[
      local pids = {}
      for _, kind in ipairs {"process", "process", "thread"} do
        local p = pulsar.spawn{concurrency = kind}:wait(30)
        pids[#pids + 1] = pulsar.send(p, "info"):wait(30).actor.pid
      end
      print("children", table.concat(pids, " "))
      print("pid", pulsar.get_actor():info().actor.pid)
      io.stdout:flush()
      pulsar.sleep(60)
    ]])
    local tree = descendants(pid)
    for child in h.out():match("children\t([%d ]+)"):gmatch("%d+") do
      tree[#tree + 1] = tonumber(child)
    end
    assert.is_true(#tree >= 3, "expected the actors' pids, got " .. #tree)
    h.kill("TERM", pid)
    assert.are.equal(15, h.wait(30), h.err())
    tree[#tree + 1] = pid
    assert.truthy(support.wait_for(function() return all_gone(tree) end, 20),
                  "a process outlived the arbiter")
  end)
end)

describe("--pid-file", function()
  local path
  before_each(function() path = support.tmpname(".pid") end)
  after_each(function() os.remove(path) end)

  local function pid_file_option() return "--pid-file " .. quote(path) end

  it("holds the arbiter's pid while it runs and is removed after a clean exit", function()
    local h, pid = start_arbiter([[
      print("pid", pulsar.get_actor():info().actor.pid)
      io.stdout:flush()
      pulsar.sleep(0.5)
    ]], pid_file_option())
    assert.are.equal(pid .. "\n", support.read_file(path))
    assert.are.equal(0, h.wait(30), h.err())
    assert.is_nil(support.read_file(path))
  end)

  it("is removed after SIGTERM", function()
    local h, pid = start_arbiter(WAITING_ARBITER, pid_file_option())
    assert.are.equal(pid .. "\n", support.read_file(path))
    h.kill("TERM", pid)
    assert.are.equal(15, h.wait(30), h.err())
    assert.is_nil(support.read_file(path))
  end)

  it("makes a second arbiter refuse to start while the first runs", function()
    local h, pid = start_arbiter(WAITING_ARBITER, pid_file_option())
    local r = run(pid_file_option() .. " -e 'print(\"started\")'")
    assert.are.equal(1, r.code)
    assert.are.equal("", r.out)
    assert.are.equal(("pulsar-lua: pid file %s is held by the running process %d\n")
                     :format(path, pid), r.err)
    assert.are.equal(pid .. "\n", support.read_file(path))
    h.kill("TERM", pid)
    assert.are.equal(15, h.wait(30), h.err())
  end)

  local READ_PID_FILE = [[
    local path = ...
    local f = assert(io.open(path))
    print(pulsar.get_actor():info().actor.pid, f:read("a"))
    f:close()
  ]]

  local stale = {
    ["the pid of a process that has exited"] = function() return dead_pid() .. "\n" end,
    ["garbage"] = function() return "not a pid\n" end,
    ["nothing"] = function() return "" end,
    ["a pid followed by garbage"] = function() return dead_pid() .. "x\n" end,
  }
  for what, content in pairs(stale) do
    it("is replaced, silently, when it holds " .. what, function()
      support.write_file(path, content())
      local r = run(pid_file_option() .. " " .. quote(script(READ_PID_FILE)) .. " " .. quote(path))
      assert.are.same({0, ""}, {r.code, r.err})
      local pid, held = r.out:match("^(%d+)\t(.*)\n$")
      assert.is_not_nil(pid, r.out)
      assert.are.equal(pid .. "\n", held)
      assert.is_nil(support.read_file(path))
    end)
  end
end)

describe("--log-level", function()
  local TIMESTAMP = "%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d"
  local LOGS = [[-e 'pulsar.log.debug("dbg %s", "line") pulsar.log.warning("x") pulsar.log.error("boom %d", 7)']]

  it("error: warnings print nothing, an error prints one line", function()
    local r = run("--log-level error " .. LOGS)
    assert.are.same({0, ""}, {r.code, r.out})
    assert.matches("^" .. TIMESTAMP .. " ERROR arbiter: boom 7\n$", r.err)
  end)

  it("debug: debug lines appear", function()
    local r = run("--log-level debug " .. LOGS)
    assert.are.equal(0, r.code)
    assert.matches("\n?" .. TIMESTAMP .. " DEBUG arbiter: dbg line\n", r.err)
    assert.matches(TIMESTAMP .. " WARNING arbiter: x\n", r.err)
    assert.matches(TIMESTAMP .. " ERROR arbiter: boom 7\n", r.err)
  end)

  it("none: nothing at all", function()
    local r = run("--log-level none " .. LOGS .. [[ -e 'pulsar.log.critical("c")']])
    assert.are.same({0, "", ""}, {r.code, r.out, r.err})
  end)
end)

---------------------------------------------------------------------------
-- Lua code that never returns to the loop keeps the loop from taking a
-- signal: the host interrupts it (lua.c's "interrupted!"), and the signal
-- then stops the arbiter as always (stopping hook, status = the signal).

-- Sets a stopping hook that prints "stopped", then prints the pid.
local HOOK_AND_PID = [[
  pulsar.arbiter().hooks.stopping = function() print("stopped") end
  print("pid", pulsar.get_actor():info().actor.pid)
  io.stdout:flush()
]]

local SIGNALS = {INT = 2, TERM = 15}

describe("a busy arbiter", function()
  for name, status in pairs(SIGNALS) do
    it("SIG" .. name .. " interrupts a main chunk stuck in a loop; it exits " .. status, function()
      local h, pid = start_arbiter(HOOK_AND_PID .. [[
        print("spinning") io.stdout:flush()
        while true do end
      ]])
      assert.truthy(h.wait_output("spinning", 30))
      h.kill(name, pid)
      local code = h.wait(30)
      if not code then h.kill("KILL", pid) end
      assert.are.equal(status, code, h.err())
      assert.matches("stopped\n$", h.out())
      assert.matches("pulsar%-lua: interrupted!\nstack traceback:", h.err())
    end)

    it("SIG" .. name .. " interrupts a command handler stuck in the arbiter; it exits " .. status, function()
      local h, pid = start_arbiter(HOOK_AND_PID .. [[
        pulsar.command("spin", function() print("spinning") io.stdout:flush() while true do end end)
        local p = pulsar.spawn{concurrency = "thread"}:wait(30)
        pulsar.send(p, "run", function() pulsar.send("arbiter", "spin") end)
      ]])
      assert.truthy(h.wait_output("spinning", 30))
      h.kill(name, pid)
      local code = h.wait(30)
      if not code then h.kill("KILL", pid) end
      assert.are.equal(status, code, h.err())
      assert.matches("stopped\n$", h.out())
    end)

    it("SIG" .. name .. " interrupts a REPL line stuck in a loop on a pipe; it exits " .. status, function()
      local input = support.write_file(support.tmpname(".in"),
        HOOK_AND_PID:gsub("\n%s*", " ") .. "\nprint('spinning') io.stdout:flush() while true do end\n")
      local h = support.start("-i", ("sh -c 'exec \"$0\" \"$@\" < %s'"):format(quote(input)))
      local pid = tonumber(h.wait_output("pid\t(%d+)", 30))
      assert.is_not_nil(pid, h.err())
      assert.truthy(h.wait_output("spinning", 30))
      h.kill(name, pid)
      local code = h.wait(30)
      if not code then h.kill("KILL", pid) end
      assert.are.equal(status, code, h.err())
      assert.matches("stopped\n$", h.out())
      assert.matches("interrupted!", h.err())
    end)
  end
end)
