-- B9 node<->node round trip (docs/BENCHMARKS.md): a thread actor on node a
-- calls `echo` on a thread actor on node b, one call at a time, N round trips,
-- each one timed. The nodes are two pulsar-lua processes on 127.0.0.1 linked
-- by their TCP mailboxes, so each round trip crosses one TCP link twice: the
-- job of tests/bench/b9_floor.c and tests/bench/erlang/b9_nodes.erl.
--
--   pulsar-lua tests/bench/b9_nodes.lua [N]
--
-- N defaults to 50000. One file plays three roles, so that scripts/bench runs
-- one command (the plain one above, the launcher):
--   1. the launcher (no --node): picks two free ports, starts node b as
--      `pulsar-lua --node b --mailbox 127.0.0.1:PB b9_nodes.lua --serve S`,
--      waits until b has said it is up, then runs node a as
--      `pulsar-lua --node a --mailbox 127.0.0.1:PA --join 127.0.0.1:PB
--      b9_nodes.lua --measure N`, passes its output on and stops b.
--   2. node b (--serve S): does nothing but stay up (S seconds at most, so a
--      launcher killed by force leaves nothing behind for long).
--   3. node a (--measure N): waits for the link to b, spawns the echoer on b
--      (pulsar.spawn{node = "b", concurrency = "thread"}) and the timing loop
--      on a, hands the loop the echoer's proxy and runs it.
-- Both nodes use the default cookie file (~/.pulsar-lua/cookie), the same one.
-- Prints node a's key=value lines for scripts/bench: n, rtt_p50_us,
-- rtt_p99_us (per round trip) and rate (round trips/s over the whole loop),
-- the keys of b9_floor.

local SCRIPT = arg[0]
local EXE = arg[-1] or "pulsar-lua"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function shell_ok(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

-- ---- node a: the measurement ---------------------------------------------

local bench = dofile((arg[0]:match("^(.*/)") or "./") .. "roundtrip.lua") -- the timed loop, shared with B1

-- Waits until node b is among this node's links (the link --join makes may
-- still be under way when the script starts): at most node_timeout seconds.
local function wait_for_b()
  local limit = require("pulsar.core").config().node_timeout or 10
  local waited = 0
  while true do
    for _, name in ipairs(pulsar.nodes()) do
      if name == "b" then return end
    end
    if waited >= limit then
      error(("b9_nodes: node a has no link to node b after %g s (nodes: %s)")
        :format(waited, table.concat(pulsar.nodes(), ", ")))
    end
    pulsar.sleep(0.05)
    waited = waited + 0.05
  end
end

local function measure(n)
  wait_for_b()
  local echo = pulsar.spawn{node = "b", name = "b9-echo", concurrency = "thread"}:wait()
  local loop = pulsar.spawn{name = "b9-loop", concurrency = "thread",
                            commands = {bench = bench}}:wait()
  local r = pulsar.send(loop, "bench", echo, n):wait()
  print(("n=%d"):format(r.n))
  print(("rtt_p50_us=%.3f"):format(r.p50 * 1e6))
  print(("rtt_p99_us=%.3f"):format(r.p99 * 1e6))
  print(("rate=%.0f"):format(r.rate))
  io.stdout:flush()
  pulsar.send(loop, "stop")
  pulsar.send(echo, "stop")
  pulsar.arbiter():stop()
end

-- ---- node b: stays up ------------------------------------------------------

local function serve(seconds)
  print("ready")
  io.stdout:flush()
  pulsar.call_later(seconds, function() pulsar.arbiter():stop() end)
end

-- ---- the launcher ----------------------------------------------------------

-- A port nobody listens on, below the ephemeral range (32768-60999 on
-- Linux), where no outgoing connection of this machine can hold it.
local function free_port(avoid)
  while true do
    local port = math.random(20000, 31999)
    if port ~= avoid and not shell_ok(
        ("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null"):format(port)) then
      return port
    end
  end
end

-- Whether pid is a live process (a zombie nobody reaps is not).
local function alive(pid)
  local f = io.open(("/proc/%d/stat"):format(pid))
  if not f then return false end
  local stat = f:read("a")
  f:close()
  return not stat:match("^%d+ %b() Z")
end

local function read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- Starts node b in the background; returns its pid and its output files.
local function start_b(port, dir, seconds)
  local out, err = dir .. "/b.out", dir .. "/b.err"
  local cmd = ("%s --node b --mailbox 127.0.0.1:%d %s --serve %d > %s 2> %s < /dev/null & echo $!")
    :format(sh_quote(EXE), port, sh_quote(SCRIPT), seconds, sh_quote(out), sh_quote(err))
  local p = assert(io.popen(cmd))
  local pid = math.tointeger(tonumber(p:read("l")))
  p:close()
  assert(pid, "b9_nodes: could not start node b")
  return pid, out, err
end

-- Waits up to 10 s for node b's "ready"; errors with its stderr if it ended.
local function wait_ready(pid, out, err)
  for _ = 1, 200 do
    if read_file(out):find("ready", 1, true) then return end
    if not alive(pid) then
      error("b9_nodes: node b ended before it was up:\n" .. read_file(err))
    end
    shell_ok("sleep 0.05")
  end
  error("b9_nodes: node b was not up after 10 s:\n" .. read_file(err))
end

local function run_a(n, port_a, port_b)
  local cmd = ("%s --node a --mailbox 127.0.0.1:%d --join 127.0.0.1:%d %s --measure %d < /dev/null")
    :format(sh_quote(EXE), port_a, port_b, sh_quote(SCRIPT), n)
  local p = assert(io.popen(cmd))
  io.stdout:write(p:read("a"))
  io.stdout:flush()
  return p:close()
end

local function launch(n)
  local dir = os.tmpname()
  os.remove(dir)
  assert(shell_ok("mkdir -m 700 " .. sh_quote(dir)), "b9_nodes: no temporary directory")
  local port_b = free_port()
  local port_a = free_port(port_b)
  local pid, out, err = start_b(port_b, dir, 3600)
  local ok, why = pcall(function()
    wait_ready(pid, out, err)
    return run_a(n, port_a, port_b)
  end)
  shell_ok(("kill -TERM %d 2>/dev/null"):format(pid))
  for _ = 1, 100 do -- up to 5 s for b's graceful stop
    if not alive(pid) then break end
    shell_ok("sleep 0.05")
  end
  local b_err = read_file(err)
  shell_ok("rm -rf " .. sh_quote(dir))
  if not ok then error(why, 0) end
  if not why then
    io.stderr:write("b9_nodes: node a failed; node b's stderr:\n", b_err)
    os.exit(1)
  end
end

if arg[1] == "--serve" then
  serve(tonumber(arg[2]) or 3600)
elseif arg[1] == "--measure" then
  measure(math.tointeger(tonumber(arg[2])) or 50000)
else
  launch(math.tointeger(tonumber(arg[1])) or 50000)
end
