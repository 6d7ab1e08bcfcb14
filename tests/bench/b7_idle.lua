-- B7 idle cost (docs/BENCHMARKS.md): K thread actors spawned and left idle,
-- and the CPU time the arbiter's process (which holds them all, one thread
-- each) uses over a window of SECONDS in which nothing is asked of them.
--
--   pulsar-lua tests/bench/b7_idle.lua [K] [SECONDS]
--
-- K defaults to 100, SECONDS to 10; the window starts 0.5 s after the last
-- actor is running. CPU time is the sum over /proc/<pid>/task/<tid>/schedstat
-- (nanoseconds on a CPU, every thread), the measure of b7_floor; the
-- utime + stime of /proc/<pid>/stat (clock ticks, every thread) is printed
-- beside it. Prints key=value lines for scripts/bench: size, seconds, cpu_s
-- (over the window), cpu_per_10s, stat_cpu_s.

local hrtime = require("pulsar.core").hrtime
local K = math.tointeger(tonumber(arg[1])) or 100
local SECONDS = tonumber(arg[2]) or 10
local TICKS = 100 -- USER_HZ, as on every Linux

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- /proc/self is this process: the arbiter and every thread actor.
local stat = assert(read("/proc/self/stat"), "b7_idle: no /proc/self/stat")
local pid = stat:match("^(%d+)")

local function stat_cpu()
  local s = read("/proc/" .. pid .. "/stat")
  local utime, stime = s:match("%) %S+" .. (" %S+"):rep(10) .. " (%d+) (%d+)")
  return (tonumber(utime) + tonumber(stime)) / TICKS
end

local function tasks()
  local p = assert(io.popen("ls /proc/" .. pid .. "/task"))
  local t = {}
  for tid in p:lines() do t[#t + 1] = tid end
  p:close()
  return t
end

local function task_cpu(tids)
  local sum = 0
  for _, tid in ipairs(tids) do
    local s = read("/proc/" .. pid .. "/task/" .. tid .. "/schedstat")
    if s then sum = sum + tonumber(s:match("^(%d+)")) / 1e9 end
  end
  return sum
end

local spawns = {}
for i = 1, K do spawns[i] = pulsar.spawn{name = "b7-idle", concurrency = "thread"} end
local actors = pulsar.gather(table.unpack(spawns)):wait()
pulsar.sleep(0.5)

local tids = tasks()
local c0, s0, t0 = task_cpu(tids), stat_cpu(), hrtime()
pulsar.sleep(SECONDS)
local c1, s1, window = task_cpu(tids), stat_cpu(), hrtime() - t0

print(("size=%d\nseconds=%.3f\nthreads=%d"):format(K, window, #tids))
print(("cpu_s=%.6f"):format(c1 - c0))
print(("cpu_per_10s=%.6f"):format((c1 - c0) * 10 / window))
print(("stat_cpu_s=%.6f"):format(s1 - s0))
io.stdout:flush()

for _, a in ipairs(actors) do pulsar.send(a, "stop") end
pulsar.arbiter():stop()
