-- philosophers.lua: pulsar's dining philosophers. Five philosophers sit at a
-- round table with a fork between each pair; one must hold both forks next
-- to it to eat. The philosophers are the workers of an Application; its
-- monitor owns the forks and lends them through two custom commands,
-- `pickup_fork` and `putdown_fork`. A philosopher who gets one fork but not
-- the other puts it back (so nobody deadlocks), and each reports how much
-- it has eaten in its `info`.
--
--   build/pulsar-lua examples/philosophers.lua [seconds] [thread|process]
local seconds = tonumber(arg[1] or 3)
local kind = arg[2] or "thread"
local SEATS = 5

-- In the monitor: the forks, and the commands that lend them.
local function set_the_table(monitor)
  local holder, seated = {}, 0 -- fork number -> philosopher holding it
  pulsar.command("take_seat", function()
    seated = seated + 1
    return seated
  end)
  pulsar.command("pickup_fork", function(request, fork, philosopher)
    if holder[fork] then return false end
    holder[fork] = philosopher
    return true
  end)
  pulsar.command("putdown_fork", function(request, fork, philosopher)
    if holder[fork] == philosopher then holder[fork] = nil end
    return true
  end)
  -- The table's report: every philosopher's own account, from its info.
  pulsar.command("report", function()
    local lines = {}
    for _, worker in ipairs(monitor:info().workers or {}) do
      local info = pulsar.send(worker.actor.aid, "info"):wait(10)
      lines[#lines + 1] = info.philosopher
    end
    table.sort(lines, function(a, b) return a.number < b.number end)
    return lines
  end)
end

-- In each philosopher: think, try to eat, forever (until stopped).
local function dine(philosopher)
  local me = philosopher.philosopher
  local left, right = me.number, me.number % SEATS + 1
  local function pickup(fork) return pulsar.send("monitor", "pickup_fork", fork, me.number):wait() end
  local function putdown(fork) pulsar.send("monitor", "putdown_fork", fork, me.number):wait() end
  while philosopher.state == "starting" or philosopher:is_running() do
    pulsar.sleep(0.02 + math.random() * 0.05) -- thinking
    if pickup(left) then
      if pickup(right) then
        pulsar.sleep(0.02 + math.random() * 0.05) -- eating
        me.eaten = me.eaten + 1
        putdown(right)
      else
        me.waited = me.waited + 1
      end
      putdown(left)
    else
      me.waited = me.waited + 1
    end
  end
end

local table_app = pulsar.Application{
  name = "philosophers", workers = SEATS, concurrency = kind,
  monitor_start = set_the_table,
  worker_start = function(philosopher)
    local number = pulsar.send("monitor", "take_seat"):wait()
    philosopher.philosopher = {number = number, eaten = 0, waited = 0, pid = pulsar.get_actor():info().actor.pid}
    pulsar.async(dine, philosopher)
  end,
  worker_info = function(philosopher, info) info.philosopher = philosopher.philosopher end,
}
local monitor = table_app:start():wait()

pulsar.sleep(seconds)
local total = 0
for _, p in ipairs(pulsar.send(monitor, "report"):wait()) do
  print(("philosopher %d ate %3d times and found a fork taken %3d times"):format(
    p.number, p.eaten, p.waited))
  total = total + p.eaten
end
print(("%d meals in %g s"):format(total, seconds))
pulsar.arbiter():stop()
