-- B5 HTTP hello world (BENCHMARKS.md): the pulsar-lua side, which
-- scripts/bench measures with wrk against nginx+Lua.
--
--   pulsar-lua tests/bench/b5_http.lua PORT [WORKERS]
--
-- Serves "Hello World!" on 127.0.0.1:PORT with an HttpServer of WORKERS
-- (default 2) workers until it is stopped (SIGTERM). Exits with status 3
-- when there is no HttpServer to run (pulsar.apps not built yet), so the
-- benchmark reports the figures as n/a instead of failing.
local port = math.tointeger(tonumber(arg[1]))
local workers = math.tointeger(tonumber(arg[2])) or 2
if not port then
  io.stderr:write("usage: pulsar-lua tests/bench/b5_http.lua PORT [WORKERS]\n")
  os.exit(2)
end

local ok, apps = pcall(require, "pulsar.apps")
local HttpServer = (ok and type(apps) == "table" and apps.HttpServer) or
                   (type(pulsar.apps) == "table" and pulsar.apps.HttpServer)
if not HttpServer then
  io.stderr:write("pulsar.apps.HttpServer is not available in this build\n")
  os.exit(3)
end

HttpServer{
  name = "b5",
  bind = "127.0.0.1:" .. port,
  workers = workers,
  handler = function() return "Hello World!" end,
}:start():wait()
