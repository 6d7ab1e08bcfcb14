-- B1 ping-pong (docs/BENCHMARKS.md): actor A calls `echo` on actor B with a small
-- table, one call at a time, N round trips, each one timed.
--
--   pulsar-lua tests/bench/b1_pingpong.lua [N] [VARIANT...]
--
-- N defaults to 50000; VARIANTs (default all three):
--   process  A and B both process actors; the loop runs inside A
--   thread   A and B both thread actors; the loop runs inside A
--   arbiter  B a process actor; the loop runs in this (the arbiter's) script
-- Prints key=value lines for scripts/bench: <variant>_p50_us, <variant>_p99_us
-- (per round trip) and <variant>_rate (round trips/s over the whole loop).

local N = math.tointeger(tonumber(arg[1])) or 50000
local variants = {}
for i = 2, #arg do variants[#variants + 1] = arg[i] end
if #variants == 0 then variants = {"process", "thread", "arbiter"} end

-- The timed loop. It crosses into actor A by value, so it has no upvalues:
-- everything it needs it requires where it runs.
local function bench(_, target, n)
  local pulsar = require "pulsar"
  local hrtime = require("pulsar.core").hrtime
  local send = pulsar.send
  local msg = {seq = 0, name = "ping", data = {1, 2, 3}}
  for i = 1, math.max(100, n // 10) do -- warm-up
    msg.seq = i
    send(target, "echo", msg):wait()
  end
  local samples = {}
  local start = hrtime()
  for i = 1, n do
    msg.seq = i
    local t0 = hrtime()
    local r = send(target, "echo", msg):wait()
    samples[i] = hrtime() - t0
    if type(r) ~= "table" or r.seq ~= i then
      error(("echo %d came back as %s"):format(i, tostring(r and r.seq or r)))
    end
  end
  local total = hrtime() - start
  table.sort(samples)
  local function q(p) return samples[math.min(n, math.floor(p * n) + 1)] end
  return {p50 = q(0.50), p99 = q(0.99), rate = n / total, n = n}
end

local function report(name, r)
  print(("%s_p50_us=%.3f"):format(name, r.p50 * 1e6))
  print(("%s_p99_us=%.3f"):format(name, r.p99 * 1e6))
  print(("%s_rate=%.0f"):format(name, r.rate))
  io.stdout:flush()
end

local function pair(kind)
  local b = pulsar.spawn{name = "b1-echo", concurrency = kind}:wait()
  local a = pulsar.spawn{name = "b1-loop", concurrency = kind, commands = {bench = bench}}:wait()
  return a, b
end

local actors = {}
for _, v in ipairs(variants) do
  if v == "process" or v == "thread" then
    local a, b = pair(v)
    actors[#actors + 1], actors[#actors + 2] = a, b
    report(v, pulsar.send(a, "bench", b, N):wait())
  elseif v == "arbiter" then
    local b = pulsar.spawn{name = "b1-echo", concurrency = "process"}:wait()
    actors[#actors + 1] = b
    report(v, bench(nil, b, N))
  else
    error("b1_pingpong: unknown variant " .. tostring(v))
  end
end

for _, p in ipairs(actors) do pulsar.send(p, "stop") end
pulsar.arbiter():stop()
