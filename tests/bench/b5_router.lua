-- B5 with a router (docs/BENCHMARKS.md): the handler of tests/bench/b5_http.lua
-- behind a pulsar.http.Router, which scripts/bench measures with the same wrk
-- load on the static path /hello, beside plain B5.
--
--   pulsar-lua tests/bench/b5_router.lua PORT [WORKERS]
--
-- Serves on 127.0.0.1:PORT with an HttpServer of WORKERS (default 2) workers
-- until it is stopped (SIGTERM). The router holds a few routes as an
-- application would, and no middleware: static paths for GET and POST, a
-- :param route and a *rest route, so that what is measured is the lookup of
-- a static path among others, not a router of one route.
local port = math.tointeger(tonumber(arg[1]))
local workers = math.tointeger(tonumber(arg[2])) or 2
if not port then
  io.stderr:write("usage: pulsar-lua tests/bench/b5_router.lua PORT [WORKERS]\n")
  os.exit(2)
end

local router = pulsar.http.Router()
router:get("/users/:id", function(request) return "user " .. request.params.id end)
router:post("/users", function(request) return 201, {}, request.body end)
router:get("/about", function() return "about" end)
router:get("/hello", function() return "Hello World!" end)
router:get("/files/*path", function(request) return request.params.path end)

pulsar.apps.HttpServer{
  name = "b5-router",
  bind = "127.0.0.1:" .. port,
  workers = workers,
  handler = router,
}:start():wait()
