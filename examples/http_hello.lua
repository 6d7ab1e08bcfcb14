-- http_hello: an HTTP server answering "Hello World!" from two workers.
--
--   pulsar-lua examples/http_hello.lua [ADDRESS]
--   pulsar-lua --bind :8080 examples/http_hello.lua
--   curl http://127.0.0.1:8070/
--
-- The address is the first argument, else --bind, else 127.0.0.1:8070. The
-- monitor of the HttpServer binds it once; its two worker processes accept
-- on the same socket (--concurrency thread makes them threads). Ctrl-C stops
-- it gracefully: the workers answer what is in flight, then end.
local bind = arg[1] or pulsar.cfg.bind or "127.0.0.1:8070"

local app = pulsar.apps.HttpServer{
  name = "hello",
  bind = bind,
  workers = 2,
  handler = function(request)
    return 200, {["Content-Type"] = "text/plain"}, "Hello World!"
  end,
}
app:start():wait()
print(("serving Hello World! on http://%s/ with 2 workers (Ctrl-C stops)"):format(app.address))
io.stdout:flush()
