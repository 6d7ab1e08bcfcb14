-- ring.lua: a ring of actors passing a token, as in Erlang's classic
-- benchmark. Each actor knows the next one; the token is a message sent
-- with pulsar.cast (no reply awaited), so it goes round as fast as the
-- mailboxes carry it, through the arbiter's routing.
--
--   build/pulsar-lua examples/ring.lua [actors] [laps] [thread|process]
local size = tonumber(arg[1] or 10)
local laps = tonumber(arg[2] or 100)
local kind = arg[3] or "thread"

-- The arbiter learns that the token has come home through this command.
local home = pulsar.Future("the token's return")
pulsar.command("token_home", function(request, hops) home:set_result(hops) end,
               {ack = false})

local function ring_member(index)
  return {
    name = "ring-" .. index, concurrency = kind, index = index,
    commands = {
      -- Links this actor to the next one in the ring.
      link = function(request, next_actor) request.actor.next = next_actor return true end,
      -- One hop: the first actor counts the laps and sends the token home
      -- after the last one.
      token = function(request, hops, laps_left)
        local me = request.actor
        if me.index == 1 and hops > 0 then
          laps_left = laps_left - 1
          if laps_left == 0 then return pulsar.cast("arbiter", "token_home", hops) end
        end
        pulsar.cast(me.next, "token", hops + 1, laps_left)
      end,
    },
  }
end

local members = {}
for i = 1, size do members[i] = pulsar.spawn(ring_member(i)) end
local actors = pulsar.gather(table.unpack(members)):wait()
for i, a in ipairs(actors) do
  pulsar.send(a, "link", actors[i % size + 1]):wait()
end

local t0 = pulsar.time()
pulsar.cast(actors[1], "token", 0, laps)
local hops = home:wait(60)
local seconds = pulsar.time() - t0
print(("%d %s actors passed the token %d laps: %d hops in %.3f s (%.0f hops/s)")
      :format(size, kind, laps, hops, seconds, hops / seconds))

for _, a in ipairs(actors) do pulsar.send(a, "stop") end
