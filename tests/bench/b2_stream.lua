-- B2 one-way stream (docs/BENCHMARKS.md): actor A casts N no-reply messages
-- (pulsar.cast, ack = false) to actor B, then one `ping` to learn they have
-- all arrived; B counts them (checked) and stamps the time of every 10000th.
--
--   pulsar-lua tests/bench/b2_stream.lua [N] [VARIANT...]
--   pulsar-lua tests/bench/b2_stream.lua --size
--
-- N defaults to 1000000; VARIANTs (default both): thread (A, B thread
-- actors), process (A, B process actors). A casts in batches of 10000 and
-- lets its loop run between batches. Prints key=value lines for
-- scripts/bench: <variant>_rate_p50 (the median rate over B's 10000-message
-- batches, msg/s), <variant>_rate_p01 (the slowest 1% of those batches),
-- <variant>_rate_total (N / the time from A's first cast to the ping's
-- reply). --size prints msg_bytes=, the payload of one such cast.

local core = require "pulsar.core"
local BATCH = 10000

if arg[1] == "--size" then
  local aid = core.random_id()
  print("msg_bytes=" .. #core.encode{command = "hit", id = 123456, sender = aid,
                                    target = core.random_id(), args = {123456}, ack = false})
  io.stdout:flush()
  pulsar.arbiter():stop()
  return
end

local N = math.tointeger(tonumber(arg[1])) or 1000000
local variants = {}
for i = 2, #arg do variants[#variants + 1] = arg[i] end
if #variants == 0 then variants = {"thread", "process"} end

-- B's commands. They cross into B by value: no upvalues; B's state is a
-- global of B's VM.
local receiver = {
  hit = function()
    local s = B2_STATE
    if not s then
      s = {count = 0, marks = {}, hrtime = require("pulsar.core").hrtime}
      B2_STATE = s
    end
    local c = s.count + 1
    s.count = c
    if c % 10000 == 0 then s.marks[#s.marks + 1] = s.hrtime() end
  end,
  stats = function()
    local s = B2_STATE or {count = 0, marks = {}}
    local rates = {}
    for i = 2, #s.marks do rates[#rates + 1] = 10000 / (s.marks[i] - s.marks[i - 1]) end
    table.sort(rates)
    local function q(p)
      if #rates == 0 then return nil end
      return rates[math.min(#rates, math.floor(p * #rates) + 1)]
    end
    B2_STATE = nil
    return {count = s.count, p50 = q(0.50), p01 = q(0.01)}
  end,
}

-- A's loop.
local sender = {
  bench = function(_, target, n, batch)
    local pulsar = require "pulsar"
    local hrtime = require("pulsar.core").hrtime
    local cast, sleep = pulsar.cast, pulsar.sleep
    local start = hrtime()
    local i = 0
    while i < n do
      local upto = math.min(n, i + batch)
      for j = i + 1, upto do
        local ok, err = cast(target, "hit", j)
        if not ok then error(("cast %d: %s"):format(j, tostring(err))) end
      end
      i = upto
      sleep(0) -- let the loop write and read between batches
    end
    local pong = pulsar.send(target, "ping"):wait()
    local total = hrtime() - start
    local st = pulsar.send(target, "stats"):wait()
    if pong ~= "pong" or st.count ~= n then
      error(("B got %s of %d messages (ping: %s)"):format(tostring(st.count), n, tostring(pong)))
    end
    return {p50 = st.p50, p01 = st.p01, total = n / total}
  end,
}

local actors = {}
for _, v in ipairs(variants) do
  if v ~= "thread" and v ~= "process" then error("b2_stream: unknown variant " .. tostring(v)) end
  local b = pulsar.spawn{name = "b2-sink", concurrency = v, commands = receiver}:wait()
  local a = pulsar.spawn{name = "b2-source", concurrency = v, commands = sender}:wait()
  actors[#actors + 1], actors[#actors + 2] = a, b
  local r = pulsar.send(a, "bench", b, N, BATCH):wait()
  print(("%s_rate_p50=%.0f"):format(v, r.p50 or r.total))
  print(("%s_rate_p01=%.0f"):format(v, r.p01 or r.total))
  print(("%s_rate_total=%.0f"):format(v, r.total))
  io.stdout:flush()
end

for _, p in ipairs(actors) do pulsar.send(p, "stop") end
pulsar.arbiter():stop()
