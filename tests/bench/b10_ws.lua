-- B10 WebSocket echo (docs/BENCHMARKS.md): the server side in pulsar-lua, an
-- HttpServer with WORKERS (default 2) workers whose handler accepts a
-- WebSocket on /echo and sends every message back as it came; the load comes
-- from tests/bench/b10_client.c, as for the C floor and node's ws.
--
--   pulsar-lua tests/bench/b10_ws.lua [WORKERS]
--
-- Prints "address=127.0.0.1:PORT" once the workers accept, then serves
-- until SIGTERM. The echo waits for each send's Future, so a client that
-- does not read slows its own connection down and nothing piles up.
local workers = math.tointeger(tonumber(arg[1])) or 2

local app = pulsar.apps.HttpServer{
  name = "b10-ws", bind = "127.0.0.1:0", workers = workers,
  handler = function(request)
    if request.path ~= "/echo" then return 404, {}, "no such path: " .. request.path end
    return require("pulsar.websocket").upgrade(request, function(ws)
      while true do
        local message = ws:receive():wait()
        if message == nil then return end
        ws:send(message, ws.last_kind == "binary" and "binary" or nil):wait()
      end
    end)
  end,
}
app:start():wait()
print("address=" .. app.address)
io.stdout:flush()
