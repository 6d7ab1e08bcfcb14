-- echo.lua: a TCP echo server, a SocketServer whose two worker processes
-- accept on the one socket their monitor bound.
--
--   build/pulsar-lua examples/echo.lua               (127.0.0.1:8060)
--   build/pulsar-lua -b 127.0.0.1:0 examples/echo.lua (any free port)
--
-- then, from another terminal, a client in one line:
--   build/pulsar-lua -e 's = pulsar.open_connection("127.0.0.1:8060"):wait()
--     s:write("hello\n") print(s:readline():wait()) s:close()'
-- Ctrl-C stops the server.
local app = pulsar.apps.SocketServer{
  name = "echo",
  workers = 2,
  protocol = function()
    return {
      connection_made = function(self, transport) self.transport = transport end,
      -- A protocol without pause_writing has its reading paused while its
      -- answers wait for a client that does not read them: memory stays
      -- bounded whatever the client does.
      data_received = function(self, data) self.transport:write(data) end,
    }
  end,
}
app:start():wait()
print(("echo server listening on %s with 2 workers (Ctrl-C stops it)"):format(app.address))
io.stdout:flush()
