-- observer: a small system at work, and the web observer to watch it.
--
--   pulsar-lua examples/observer.lua [PORT]   (the observer's; default 8090, 0: any)
--   then open the URL it prints: http://127.0.0.1:PORT/?token=...
--
-- What runs, so that every part of the page has something to show:
--   * "web", an HttpServer of two worker processes, with a router;
--   * "load", a thread actor that asks "web" for a page ten times a second
--     (the HTTP chart) and pings the "counter" (messages/s);
--   * "counter", a thread actor that counts the pings and logs a line now
--     and then (the log panel);
--   * "flaky", an application of two worker processes; each ends, with an
--     error, some 20 to 40 seconds after it started, and its monitor
--     replaces it (the restarts chart; kill -9 one of their pids to see
--     the same at once).
-- Ctrl-C stops it all.
local port = math.tointeger(tonumber(arg[1] or 8090))
if not port then error("observer: the port must be a whole number, not '" .. tostring(arg[1]) .. "'", 0) end

local router = pulsar.http.Router()
router:get("/", function() return 200, {["Content-Type"] = "text/plain"}, "hello from a worker\n" end)
router:get("/time", function() return {time = os.time()} end)

local web = pulsar.apps.HttpServer{name = "web", bind = "127.0.0.1:0", workers = 2, handler = router}
web:start():wait()

local flaky = pulsar.Application{
  name = "flaky", workers = 2, max_restarts = 1000,
  worker_start = function(worker)
    local life = 20 + math.random() * 20
    pulsar.log.info("flaky worker up; ending in %.0f s", life)
    pulsar.call_later(life, function()
      pulsar.log.error("flaky worker: giving up after %.0f s, on purpose", life)
      os.exit(1)
    end)
  end,
}
flaky:start():wait()

pulsar.spawn{
  name = "counter", unique_name = "counter", concurrency = "thread",
  commands = {
    count = function(request)
      local a = request.actor
      a.pings = (a.pings or 0) + 1
      if a.pings % 100 == 0 then pulsar.log.info("%d pings so far", a.pings) end
      return a.pings
    end,
  },
  on_info = function(a, info) info.counter = {pings = a.pings or 0} end,
}:wait()

pulsar.spawn{
  name = "load", concurrency = "thread", web = web.address,
  start = function(a)
    local url = "http://" .. a.web .. "/time"
    pulsar.async(function() -- runs on once start has returned
      while a.state == "starting" or a:is_running() do
        local ok, err = pcall(function()
          pulsar.http.get(url, {timeout = 5}):wait()
          pulsar.send("counter", "count"):wait(5)
        end)
        if not ok then pulsar.log.warning("load: %s", tostring(err)) end
        pulsar.sleep(0.1)
      end
    end)
  end,
}:wait()

if not pulsar.observer.running() then -- not already started by --observer
  pulsar.observer.start{bind = "127.0.0.1:" .. port}:wait()
end
print(("web serves http://%s/ ; open the observer's URL above"):format(web.address))
