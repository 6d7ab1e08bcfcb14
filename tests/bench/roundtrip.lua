-- roundtrip.lua: the timed loop of B1 and B9, one call at a time, each one
-- timed: `echo` on `target` with a small table, N round trips after
-- max(100, N/10) of warm-up. Loaded with dofile by b1_pingpong.lua and
-- b9_nodes.lua.
--
-- It crosses into an actor by value, so it has no upvalues:
-- everything it needs it requires where it runs.
return function(_, target, n)
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
