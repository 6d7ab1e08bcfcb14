-- B3 ring (docs/BENCHMARKS.md): K thread actors in a ring pass a token with
-- pulsar.cast (no reply asked), L laps after one warm-up lap; the first
-- member stamps the time at each lap's end and, after the last, casts the
-- stamps home to the arbiter. The ring is the one of examples/ring.lua.
--
--   pulsar-lua tests/bench/b3_ring.lua [K] [L]
--
-- K defaults to 100, L to 1000. Prints key=value lines for scripts/bench, the
-- keys of b3_floor: size, laps, hop_us (the whole run's time per hop),
-- hop_p50_us and hop_p99_us (the median and 99th percentile lap divided by
-- K), rate (hops/s).

local hrtime = require("pulsar.core").hrtime
local K = math.tointeger(tonumber(arg[1])) or 100
local L = math.tointeger(tonumber(arg[2])) or 1000
if K < 2 then K = 2 end
if L < 1 then L = 1 end

-- The arbiter learns the token is home, with the first member's stamps.
local home = pulsar.Future("the token's return")
pulsar.command("b3_home", function(_, hops, marks) home:set_result({hops = hops, marks = marks}) end,
               {ack = false})

-- A member's commands cross into its VM by value: no upvalues but pulsar.
local commands = {
  link = function(request, next_actor)
    request.actor.next = next_actor
    request.actor.marks = {}
    return true
  end,
  token = function(request, hops, laps_left)
    local me = request.actor
    if me.index == 1 and hops > 0 then
      me.marks[#me.marks + 1] = require("pulsar.core").hrtime()
      laps_left = laps_left - 1
      if laps_left == 0 then
        assert(pulsar.cast("arbiter", "b3_home", hops, me.marks))
        return
      end
    end
    assert(pulsar.cast(me.next, "token", hops + 1, laps_left))
  end,
}

local spawns = {}
for i = 1, K do
  spawns[i] = pulsar.spawn{name = "b3-ring", concurrency = "thread", index = i, commands = commands}
end
local ring = pulsar.gather(table.unpack(spawns)):wait()
local links = {}
for i, a in ipairs(ring) do links[i] = pulsar.send(a, "link", ring[i % K + 1]) end
pulsar.gather(table.unpack(links)):wait()

local t0 = hrtime()
assert(pulsar.cast(ring[1], "token", 0, L + 1)) -- L + 1: the warm-up lap first
local r = home:wait(600)
if r.hops ~= (L + 1) * K or #r.marks ~= L + 1 then
  error(("b3_ring: the token made %s hops, %d stamps; expected %d, %d")
        :format(tostring(r.hops), #r.marks, (L + 1) * K, L + 1))
end
local laps = {}
for i = 1, L do laps[i] = r.marks[i + 1] - r.marks[i] end
local total = r.marks[L + 1] - r.marks[1]
table.sort(laps)
local function q(p) return laps[math.min(L, math.floor(p * L) + 1)] end
print(("size=%d\nlaps=%d"):format(K, L))
print(("hop_us=%.3f"):format(total / (L * K) * 1e6))
print(("hop_p50_us=%.3f"):format(q(0.50) / K * 1e6))
print(("hop_p99_us=%.3f"):format(q(0.99) / K * 1e6))
print(("rate=%.0f"):format(L * K / total))
print(("warmup_lap_ms=%.3f"):format((r.marks[1] - t0) * 1e3))
io.stdout:flush()

for _, a in ipairs(ring) do pulsar.send(a, "stop") end
pulsar.arbiter():stop()
