-- B4 spawn and memory (docs/BENCHMARKS.md).
--
--   pulsar-lua tests/bench/b4_spawn.lua [THREADS] [PROCS]   (default 200 50)
--
-- After one warm-up spawn of each kind (left alive and idle, untimed),
-- spawns THREADS thread actors one at a time, timing each spawn to its
-- handshake (`pulsar.spawn{...}:wait()`), then PROCS process actors the same
-- way; all stay alive and idle. Memory: the arbiter's RSS (from
-- /proc/self/smaps_rollup) before and after the thread actors, per thread
-- actor; for each process actor its Pss and Private (Private_Clean +
-- Private_Dirty) from /proc/<pid>/smaps_rollup, the median over them. Then
-- stops them all. Prints key=value lines for scripts/bench: thread_p50_us,
-- thread_p99_us, thread_rss_kb, proc_p50_us, proc_p99_us, proc_pss_kb,
-- proc_private_kb.

local hrtime = require("pulsar.core").hrtime
local NT = math.tointeger(tonumber(arg[1])) or 200
local NP = math.tointeger(tonumber(arg[2])) or 50

local function smaps(pid)
  local f = io.open(("/proc/%s/smaps_rollup"):format(pid), "r")
  if not f then return nil end
  local t = {}
  for l in f:lines() do
    local k, v = l:match("^([%w_]+):%s+(%d+) kB")
    if k then t[k] = tonumber(v) end
  end
  f:close()
  return t
end

local function quantile(s, p)
  table.sort(s)
  return s[math.min(#s, math.floor(p * #s) + 1)]
end

local function spawn_timed(kind, i)
  local t0 = hrtime()
  local p = pulsar.spawn{name = ("b4-%s-%d"):format(kind, i), concurrency = kind}:wait()
  return p, hrtime() - t0
end

local actors = {}
-- warm-up, as the C floor does: one of each kind, left alive and idle
actors[#actors + 1] = spawn_timed("thread", 0)
actors[#actors + 1] = spawn_timed("process", 0)
collectgarbage()

local rss0 = smaps("self").Rss
local times = {}
for i = 1, NT do
  local p, dt = spawn_timed("thread", i)
  actors[#actors + 1], times[i] = p, dt
end
collectgarbage()
local rss1 = smaps("self").Rss
print(("thread_p50_us=%.1f"):format(quantile(times, 0.50) * 1e6))
print(("thread_p99_us=%.1f"):format(quantile(times, 0.99) * 1e6))
print(("thread_rss_kb=%.1f"):format((rss1 - rss0) / NT))
io.stdout:flush()

times = {}
local procs = {}
for i = 1, NP do
  local p, dt = spawn_timed("process", i)
  actors[#actors + 1], procs[i], times[i] = p, p, dt
end
print(("proc_p50_us=%.1f"):format(quantile(times, 0.50) * 1e6))
print(("proc_p99_us=%.1f"):format(quantile(times, 0.99) * 1e6))
io.stdout:flush()

local pss, private = {}, {}
for _, p in ipairs(procs) do
  local info = pulsar.send(p, "info"):wait()
  local m = smaps(info.actor.pid)
  if m then
    pss[#pss + 1] = m.Pss
    private[#private + 1] = (m.Private_Clean or 0) + (m.Private_Dirty or 0)
  end
end
if #pss > 0 then
  print(("proc_pss_kb=%.0f"):format(quantile(pss, 0.50)))
  print(("proc_private_kb=%.0f"):format(quantile(private, 0.50)))
end
io.stdout:flush()

for _, p in ipairs(actors) do pulsar.send(p, "stop") end
pulsar.arbiter():stop()
