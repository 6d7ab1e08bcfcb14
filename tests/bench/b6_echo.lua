-- B6 TCP echo (docs/BENCHMARKS.md): the server side in pulsar-lua, a
-- SocketServer with WORKERS (default 2) process workers accepting on one
-- socket; the load comes from tests/bench/b6_client.c, as for the C baseline.
--
--   pulsar-lua tests/bench/b6_echo.lua [WORKERS]
--
-- Prints "address=127.0.0.1:PORT" once the workers accept, then serves
-- until SIGTERM.
local workers = math.tointeger(tonumber(arg[1])) or 2

local app = pulsar.apps.SocketServer{
  name = "b6-echo", bind = "127.0.0.1:0", workers = workers, concurrency = "process",
  protocol = function()
    return {
      connection_made = function(self, transport) self.transport = transport end,
      data_received = function(self, data) self.transport:write(data) end,
    }
  end,
}
app:start():wait()
print("address=" .. app.address)
io.stdout:flush()
