--- pulsar.observer: a live web view of the running system, served from the
-- arbiter's own VM (docs/API.md §2, "The observer"; docs/DESIGN.md, "The
-- observer").
--
--   pulsar-lua --observer 127.0.0.1:8090 app.lua
--   local obs = pulsar.observer.start{bind = "127.0.0.1:8090"}:wait()
--   print(obs.url)      -- http://127.0.0.1:8090/?token=...
--
-- What it serves, with pulsar.http's router on a server of the arbiter's
-- loop (a slow page costs the arbiter one connection, never its actors):
--   GET  /                     the page (page.html, embedded in the executable)
--   GET  /api/actors           the last snapshot, JSON
--   GET  /api/info/AID         that actor's whole info, asked for now, JSON
--   GET  /api/logs?since=SEQ   {lines = [...]}: the kept log lines after SEQ
--   POST /api/actors/AID/stop | kill | restart
--                              a graceful stop (the `stop` command), the
--                              arbiter's kill_actor, or the rolling restart of
--                              an application's worker (its monitor's
--                              restart_worker): {ok = true, result = ...}, or
--                              4xx {error = "..."}
--   GET  /ws                   WebSocket: {type = "hello", snapshot, history,
--                              logs} at once, then {type = "tick", snapshot,
--                              point, logs} after every round of the sampler
--                              (lua/pulsar/observer/sampler.lua, the shapes)
--
-- Access. Every request needs the token, `?token=T` or `Authorization:
-- Bearer T`, else 401: T is an HMAC of the cookie (the TCP mailbox's
-- secret, core.load_cookie), so whoever may attach a console may observe,
-- and the URL printed at start carries it, as a notebook server's does.
-- A browser's request with an Origin other than the page's own is refused
-- (403) before the token is looked at, and nothing answers with CORS
-- headers: a page of another site can neither read the observer nor drive
-- its WebSocket or its actions. The page itself may not be framed, and
-- sends no Referer (the token is in its URL). The default bind is
-- 127.0.0.1.
--
-- The observer never keeps the arbiter alive: its listener, its
-- connections and the sampler's timer are unref'd, so a program ends when
-- its actors and its script are done, page open or not.
local core = require "pulsar.core"
local future = require "pulsar.future"
local log = require "pulsar.log"
local mailbox = require "pulsar.mailbox"
local sampler = require "pulsar.observer.sampler"

local M = {}

local DEFAULT_BIND = "127.0.0.1:8090"
local stderr = io.stderr -- a script may remove io

local running -- {server=, url=, token=, address=} once started

local function fail(message, level) error("observer: " .. message, (level or 1) + 1) end

local function arbiter() return require("pulsar").arbiter() end

---------------------------------------------------------------------------
-- The token

local function hex(bytes) return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

--- The observer's token: derived from the cookie (cookie_file, else the
-- default ~/.pulsar-lua.cookie, made if missing), never the cookie itself.
function M.token(cookie_file)
  local cookie, why = core.load_cookie(cookie_file)
  if not cookie then fail("cannot read the cookie: " .. tostring(why), 2) end
  return hex(core.hmac_sha256(cookie, "pulsar-lua observer token")):sub(1, 32)
end

-- The token a request carries, if any.
local function given_token(request)
  local auth = request.headers.authorization
  local bearer = auth and auth:match("^[Bb]earer%s+(%S+)%s*$")
  return bearer or request.query.token
end

-- Compares through an HMAC of each, so that the time taken says nothing
-- of how much of a guess was right.
local function token_matches(given, token)
  if type(given) ~= "string" then return false end
  local key = running.compare_key
  return core.hmac_sha256(key, given) == core.hmac_sha256(key, token)
end

---------------------------------------------------------------------------
-- Answers

local function json_answer(status, value)
  return status, {["Content-Type"] = "application/json", ["Cache-Control"] = "no-store"},
         require("pulsar.json").encode(value)
end

local function refuse(status, message) return json_answer(status, {error = message}) end

-- Same origin, or none (a script, curl): a browser on another site's page
-- sends its own.
local function foreign_origin(request)
  local origin = request.headers.origin
  if origin == nil then return nil end
  local host = request.headers.host
  if host and origin == "http://" .. host then return nil end
  return origin
end

local function guard(request, next)
  local origin = foreign_origin(request)
  if origin then
    return refuse(403, ("observer: a request from another origin (%s) is refused"):format(origin))
  end
  if not token_matches(given_token(request), running.token) then
    local status, headers, body = refuse(401,
      "observer: this needs the observer's token: open the URL printed at start (/?token=...), " ..
      "or send Authorization: Bearer TOKEN")
    headers["WWW-Authenticate"] = 'Bearer realm="pulsar-lua observer"'
    return status, headers, body
  end
  return next(request)
end

local function page(request)
  local host = request.headers.host or running.address
  return 200, {
    ["Content-Type"] = "text/html; charset=utf-8",
    ["Cache-Control"] = "no-store",
    ["Referrer-Policy"] = "no-referrer",
    ["X-Frame-Options"] = "DENY",
    ["X-Content-Type-Options"] = "nosniff",
    ["Content-Security-Policy"] = ("default-src 'none'; script-src 'unsafe-inline'; " ..
      "style-src 'unsafe-inline'; img-src data:; connect-src 'self' ws://%s; " ..
      "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"):format(host),
  }, require "pulsar.observer.page"
end

local function find_actor(aid)
  local snapshot = sampler.snapshot()
  for _, e in ipairs(snapshot and snapshot.actors or {}) do
    if e.aid == aid then return e end
  end
  for _, rec in ipairs(require("pulsar.arbiter").actors()) do
    if rec.aid == aid then return rec end
  end
  if aid == arbiter().aid then return {aid = aid, kind = "arbiter"} end
  return nil
end

local function info_of(request)
  local aid = request.params.aid
  if not find_actor(aid) then return refuse(404, ("observer: no actor '%s'"):format(aid)) end
  local ok, info = pcall(function() return mailbox.send(aid, "info"):wait(5) end)
  if not ok then return refuse(502, ("observer: info of '%s' failed: %s"):format(aid, tostring(info))) end
  -- a pthread id passes JSON's 14 digits: sent as text, as in the snapshot
  if type(info) == "table" and type(info.actor) == "table" and info.actor.thread_id then
    info.actor.thread_id = tostring(info.actor.thread_id)
  end
  return json_answer(200, info)
end

---------------------------------------------------------------------------
-- Actions

local ACTIONS = {
  stop = function(e)
    local sent, why = mailbox.cast(e.aid, "stop")
    if not sent then error(why, 0) end
    return "asked " .. e.aid .. " to stop"
  end,
  kill = function(e) return require("pulsar.arbiter").kill_actor(e.aid) end,
  restart = function(e)
    local parent = e.parent or e.manager
    if not parent or e.kind == "monitor" or not find_actor(parent) or find_actor(parent).kind ~= "monitor" then
      error(("restart: '%s' is not a worker of an application; stop or kill it instead"):format(e.aid), 0)
    end
    return mailbox.send(parent, "restart_worker", e.aid):wait(60)
  end,
}

local function act(request)
  local aid, name = request.params.aid, request.params.action
  local action = ACTIONS[name]
  if not action then
    return refuse(404, ("observer: no action '%s' (stop, kill or restart)"):format(name))
  end
  local e = find_actor(aid)
  if not e then return refuse(404, ("observer: no actor '%s'"):format(aid)) end
  if e.kind == "arbiter" then
    return refuse(400, "observer: the arbiter is not stopped from its observer: stop it where it runs")
  end
  log.info("observer: %s of %s (%s), asked from the observer", name, e.name or "actor", aid)
  local ok, result = pcall(action, e)
  if not ok then return refuse(409, ("observer: %s of '%s' failed: %s"):format(name, aid, tostring(result))) end
  return json_answer(200, {ok = true, result = result})
end

---------------------------------------------------------------------------
-- The live feed

-- One page's feed. A tick that finds the last one still unwritten (a slow
-- page) is skipped: each carries the whole snapshot, and the log lines go
-- from the last seq this page was sent, so nothing is lost but a frame.
local function feed(ws)
  local json = require "pulsar.json"
  local snapshot = sampler.fresh(arbiter()):wait(10)
  local lines = sampler.logs_since(0)
  ws:send(json.encode {type = "hello", snapshot = snapshot, history = sampler.history(), logs = lines,
                       token_ok = true})
  local seq = sampler.last_seq()
  local sending
  local function tick(snap, point)
    if sending and not sending:done() then return end
    local fresh = sampler.logs_since(seq)
    seq = sampler.last_seq()
    sending = ws:send(json.encode {type = "tick", snapshot = snap, point = point, logs = fresh})
  end
  sampler.subscribe(tick)
  local ok, err = pcall(function()
    while ws:receive():wait() ~= nil do end -- the page says nothing we need
  end)
  sampler.unsubscribe(tick)
  if not ok then log.debug("observer: a page's feed ended: %s", tostring(err)) end
end

---------------------------------------------------------------------------
-- Starting and stopping

local function routes()
  local router = require("pulsar.router").Router()
  router:use(guard)
  router:get("/", page)
  router:get("/api/actors", function() return json_answer(200, sampler.fresh(arbiter()):wait(10)) end)
  router:get("/api/info/:aid", info_of)
  router:get("/api/logs", function(request)
    local since = math.tointeger(tonumber(request.query.since or "0"))
    if not since or since < 0 then return refuse(400, "observer: since must be a whole number from 0") end
    return json_answer(200, {lines = sampler.logs_since(since), last = sampler.last_seq()})
  end)
  router:post("/api/actors/:aid/:action", act)
  -- no keepalive pings: their timer would keep the arbiter alive
  router:websocket("/ws", feed, {ping_interval = 0})
  return require("pulsar.router").handler(router)
end

local function url_of(address, token)
  local host, port = address:match("^(.*):(%d+)$")
  if host == "0.0.0.0" or host == "::" or host == "[::]" or host == "" then host = "127.0.0.1" end
  return ("http://%s:%s/?token=%s"):format(host, port, token)
end

--- Starts the observer in the arbiter: {bind = "HOST:PORT"} (default
-- 127.0.0.1:8090; port 0 picks a free one), cookie_file (default the
-- arbiter's). A Future of {address=, url=, token=}; the URL is printed on
-- stderr unless quiet = true.
function M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("start takes a table: {bind = 'HOST:PORT'}", 2) end
  local a = arbiter()
  if not a then fail("start runs in the arbiter", 2) end
  if running then fail("already running at " .. running.url:gsub("%?.*", ""), 2) end
  local bind = opts.bind or DEFAULT_BIND
  if type(bind) ~= "string" then fail("bind must be a string 'HOST:PORT'", 2) end
  if bind:sub(1, 5) == "unix:" then fail("bind must be HOST:PORT: a browser cannot open " .. bind, 2) end
  local token = M.token(opts.cookie_file or a.cfg.cookie_file)
  running = {token = token, compare_key = core.random_id() .. core.random_id(), starting = true}
  local protocol = require("pulsar.http").protocol(routes(), {keep_alive = 30, timeout = 30})
  local ok, pending = pcall(require("pulsar").create_server, {bind = bind, protocol = protocol,
    on_accept = function(_, transport) transport:unref() end})
  if not ok then
    running = nil
    fail(("cannot listen at %s: %s"):format(bind, tostring(pending)), 2)
  end
  return future.async(function()
    local listening, server = pcall(pending.wait, pending)
    if not listening then
      running = nil
      error(("observer: cannot listen at %s: %s"):format(bind, tostring(server)), 0)
    end
    server:unref()
    running.server, running.address, running.starting = server, server.address, nil
    running.url = url_of(server.address, token)
    sampler.start(a, opts.interval)
    if not opts.quiet then
      stderr:write("pulsar-lua: the observer is at ", running.url, "\n")
      stderr:flush()
    end
    return {address = running.address, url = running.url, token = token}
  end)
end

--- Stops the observer: no more pages, rounds or feeds. Open pages see
-- their WebSocket close.
function M.stop()
  if not running then return end
  if running.server then
    running.server:close()
    running.server:close_connections()
  end
  sampler.stop()
  running = nil
end

--- {address=, url=} of the running observer, or nil.
function M.running()
  if not running or running.starting then return nil end
  return {address = running.address, url = running.url}
end

return M
