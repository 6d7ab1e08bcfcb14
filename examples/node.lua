-- node.lua: one node of a cluster; run it in three terminals (README.md,
-- "Nodes"):
--
--   build/pulsar-lua --node a --mailbox 127.0.0.1:7001 examples/node.lua
--   build/pulsar-lua --node b --mailbox 127.0.0.1:7002 --join 127.0.0.1:7001 examples/node.lua
--   build/pulsar-lua --node c --mailbox 127.0.0.1:7003 --join 127.0.0.1:7001 examples/node.lua
--
-- Each node runs a "greeter" thread actor. Every 2 seconds each node calls
-- the greeter of every node it is linked to ("greeter@b") and prints the
-- answer; Ctrl-C one node and the others print that it went down, start it
-- again and they greet it again. The three share ~/.pulsar-lua/cookie (on
-- several machines: copy that file, see docs/API.md "Nodes").
local me = pulsar.node()
if not me then
  io.stderr:write("node.lua: run me as a node: pulsar-lua --node NAME --mailbox HOST:PORT [--join ADDR] examples/node.lua\n")
  os.exit(2)
end

pulsar.spawn{name = "greeter", concurrency = "thread", commands = {
  greet = function(_, from)
    return ("hello %s, from the greeter on %s (pid %d)"):format(from, pulsar.node(), pulsar.get_actor():info().actor.pid)
  end,
}}:wait()
print(("node %s at %s: linked to %s"):format(me, pulsar.get_actor().tcp_address,
                                            table.concat(pulsar.nodes(), ", ")))

local watched = {}
while true do
  for _, node in ipairs(pulsar.nodes()) do
    if not watched[node] then
      watched[node] = true
      pulsar.monitor_node(node, function(name, why)
        watched[name] = nil
        print(("node %s went down: %s"):format(name, why))
      end)
    end
    local ok, answer = pcall(function() return pulsar.send("greeter@" .. node, "greet", me):wait(5) end)
    print(ok and answer or ("no answer from %s: %s"):format(node, answer))
  end
  io.stdout:flush()
  pulsar.sleep(2)
end
