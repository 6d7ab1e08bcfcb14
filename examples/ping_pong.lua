-- ping_pong.lua: two actors, one in a process and one in a thread, calling
-- each other through the arbiter.
--
--   build/pulsar-lua examples/ping_pong.lua [rounds]
local rounds = tonumber(... or 5)

-- The pong side answers `hit` with the next count.
local pong = pulsar.spawn{
  name = "pong", concurrency = "thread",
  commands = {hit = function(request, n) return n + 1 end},
}:wait()

-- The ping side hits pong `rounds` times, from its own process.
local ping = pulsar.spawn{
  name = "ping", concurrency = "process",
  commands = {
    play = function(request, other, times)
      local n, t0 = 0, pulsar.time()
      for _ = 1, times do n = pulsar.send(other, "hit", n):wait() end
      return {count = n, seconds = pulsar.time() - t0, pid = request.actor:info().actor.pid}
    end,
  },
}:wait()

local result = pulsar.send(ping, "play", pong, rounds):wait()
print(("ping (pid %d) and pong (a thread of pid %d) counted to %d in %.3f s"):format(
  result.pid, pulsar.get_actor():info().actor.pid, result.count, result.seconds))

pulsar.send(ping, "stop")
pulsar.send(pong, "stop")
