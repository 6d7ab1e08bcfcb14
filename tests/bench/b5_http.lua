-- B5 HTTP hello world (docs/BENCHMARKS.md): the pulsar-lua side, which
-- scripts/bench measures with wrk against nginx+Lua.
--
--   pulsar-lua tests/bench/b5_http.lua PORT [WORKERS]
--
-- Serves "Hello World!" on 127.0.0.1:PORT with a pulsar.apps.HttpServer of
-- WORKERS (default 2) workers until it is stopped (SIGTERM).
local port = math.tointeger(tonumber(arg[1]))
local workers = math.tointeger(tonumber(arg[2])) or 2
if not port then
  io.stderr:write("usage: pulsar-lua tests/bench/b5_http.lua PORT [WORKERS]\n")
  os.exit(2)
end

pulsar.apps.HttpServer{
  name = "b5",
  bind = "127.0.0.1:" .. port,
  workers = workers,
  handler = function() return "Hello World!" end,
}:start():wait()
