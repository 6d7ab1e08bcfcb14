-- B8 many-to-many (docs/BENCHMARKS.md): N thread actors, each making M calls
-- (pulsar.send of `echo` with a small table, waiting for each reply before
-- the next) to a random other one of them, all N at once; the total calls/s.
--
--   pulsar-lua tests/bench/b8_many.lua [N] [M]
--
-- N defaults to 1000, M to 100. Actor i has unique_name "b8-i"; the clock runs
-- from the arbiter's first `calls` request to the last reply. Prints key=value
-- lines for scripts/bench: actors, calls, rate (calls/s; each call is a
-- request and its reply), call_p50_us and call_p99_us (over every call).

local hrtime = require("pulsar.core").hrtime
local N = math.tointeger(tonumber(arg[1])) or 1000
local M = math.tointeger(tonumber(arg[2])) or 100
if N < 2 then N = 2 end

-- The loop inside each actor; it crosses by value: no upvalues but pulsar.
local commands = {
  calls = function(request, n, m)
    local now = require("pulsar.core").hrtime
    local me = request.actor.index
    local msg = {seq = 0, name = "ping", data = {1, 2, 3}}
    local samples = {}
    for i = 1, m do
      local other = math.random(n - 1)
      if other >= me then other = other + 1 end
      msg.seq = i
      local t0 = now()
      local r = pulsar.send("b8-" .. other, "echo", msg):wait()
      samples[i] = now() - t0
      if type(r) ~= "table" or r.seq ~= i then
        error(("call %d to b8-%d came back as %s"):format(i, other, tostring(r)))
      end
    end
    return samples
  end,
}

local spawns = {}
for i = 1, N do
  spawns[i] = pulsar.spawn{name = "b8-many", unique_name = "b8-" .. i, concurrency = "thread",
                           index = i, commands = commands}
end
local actors = pulsar.gather(table.unpack(spawns)):wait()

local t0 = hrtime()
local runs = {}
for i, a in ipairs(actors) do runs[i] = pulsar.send(a, "calls", N, M) end
local results = pulsar.gather(table.unpack(runs)):wait()
local total = hrtime() - t0

local all = {}
for _, s in ipairs(results) do
  for _, v in ipairs(s) do all[#all + 1] = v end
end
table.sort(all)
local function q(p) return all[math.min(#all, math.floor(p * #all) + 1)] end
print(("actors=%d\ncalls=%d"):format(N, #all))
print(("rate=%.0f"):format(#all / total))
print(("call_p50_us=%.3f"):format(q(0.50) * 1e6))
print(("call_p99_us=%.3f"):format(q(0.99) * 1e6))
io.stdout:flush()

for _, a in ipairs(actors) do pulsar.send(a, "stop") end
pulsar.arbiter():stop()
