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
