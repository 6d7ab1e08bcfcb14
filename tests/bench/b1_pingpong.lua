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

local bench = dofile((arg[0]:match("^(.*/)") or "./") .. "roundtrip.lua") -- the timed loop, shared with B9

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
