--- pulsar.router: routes, middleware and static files in front of
-- HttpServer's handler (docs/API.md §2, "Router and static files").
--
--   local router = pulsar.http.Router()
--   router:get("/users/:id", function(request) return {id = request.params.id} end)
--   router:static("/static", "public")
--   pulsar.apps.HttpServer{bind = "127.0.0.1:8080", handler = router}:start():wait()
--
-- Two lives. Where it is made, a router is plain data: lists of routes
-- (method, pattern, handler) and middleware, so that it crosses into the
-- workers by value as any handler does (the value codec keeps strings,
-- tables and functions, and drops metatables). In each worker,
-- `M.handler(router)` compiles it once into one handler function for
-- pulsar.http: a hash of the static paths (method -> handler), and a list
-- of the patterns, each split into its segments in advance. A request then
-- costs a hash lookup when its path is static; otherwise its path is cut at
-- '/' once and the patterns compared segment by segment, in the order they
-- were added. Nothing is built per request but `request.params` and the
-- strings the patterns capture.
--
-- The rules, in the order a request meets them:
--   * matching is on the path as sent, cut at '/', each segment then
--     percent-decoded: "%2F" never makes a new segment, and the values in
--     request.params are decoded; a static path (no ':' nor '*') wins over
--     the patterns, which are tried in order;
--   * `:name` matches one non-empty segment; `*name` (last only) the rest
--     of the path, zero or more segments, as one decoded string;
--   * HEAD is served by the GET route (pulsar.http sends no body for it);
--   * no route for the path: 404; routes for the path, none for the
--     method: 405 with `Allow`, the methods sorted, HEAD beside GET;
--   * middleware, `router:use(fn)`, runs around the route in the order
--     added: `fn(request, next)` returns what `next(request)` returned,
--     changed or not, or answers itself without calling next. next(request)
--     returns `status, headers, body`: status an integer, headers a table
--     or nil, the body as the handler gave it; for a WebSocket upgrade, the
--     upgrade object alone (a table in place of the status), which the
--     router sends on as it is whatever comes with it. The 404 and 405
--     answers go through the middleware too;
--   * a handler returns what an HttpServer handler returns, with one rule
--     of the router's own: a table without a metatable as the only value,
--     or as the body after a status (`return 201, {id = 7}`, `return 200,
--     headers, {...}`) is sent as JSON (pulsar.json.encode) with
--     `Content-Type: application/json` unless the headers set one. So under
--     a router a list of strings is JSON, not a body to concatenate, and
--     `status, table` is a JSON body, not headers: return `status, headers,
--     ""` for headers alone. Tables with a metatable (a WebSocket upgrade,
--     a file from router:static) go through unchanged.
local M = {}

local json_encode -- pulsar.json.encode, loaded with the first JSON answer

local METHODS = {GET = true, POST = true, PUT = true, DELETE = true, PATCH = true,
                 HEAD = true, OPTIONS = true}

-- The field that says a table is a router, kept when it crosses (its
-- metatable is not).
local KIND = "pulsar.router"

local Router = {}
Router.__index = Router
Router.__name = "pulsar.http.Router"
M.Router_methods = Router

local function fail(message, level) error("Router: " .. message, (level or 1) + 1) end

--- pulsar.http.Router(): an empty router.
function M.Router()
  return setmetatable({kind = KIND, routes = {}, middleware = {}}, Router)
end

--- Whether `v` is a router, here or after crossing into a worker.
function M.is_router(v)
  return type(v) == "table" and v.kind == KIND and type(v.routes) == "table"
end

--- Gives a router that crossed into this VM its methods back.
function M.restore(v)
  if not M.is_router(v) then error("Router.restore: not a router", 2) end
  return setmetatable(v, Router)
end

---------------------------------------------------------------------------
-- Patterns

-- The segments of a pattern: {literal = "users"} | {param = "id"} |
-- {splat = "path"}; raises naming what is wrong.
local function parse_pattern(pattern, level)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    fail(("pattern %s must be a string starting with '/'"):format(
      type(pattern) == "string" and ("%q"):format(pattern) or "(a " .. type(pattern) .. ")"), level + 1)
  end
  local segments, names = {}, {}
  local rest = pattern:sub(2)
  local i = 0
  for segment in (rest .. "/"):gmatch("([^/]*)/") do
    i = i + 1
    local sigil, name = segment:sub(1, 1), segment:sub(2)
    if sigil == ":" or sigil == "*" then
      if not name:find("^[%a_][%w_]*$") then
        fail(("pattern %q: %q is not a name"):format(pattern, name), level + 1)
      end
      if names[name] then fail(("pattern %q names %q twice"):format(pattern, name), level + 1) end
      names[name] = true
      segments[i] = sigil == ":" and {param = name} or {splat = name}
    else
      if segment:find("[:*]") then
        fail(("pattern %q: ':' and '*' may only start a segment"):format(pattern), level + 1)
      end
      segments[i] = {literal = segment}
    end
  end
  for k = 1, #segments - 1 do
    if segments[k].splat then
      fail(("pattern %q: '*%s' must be the last segment"):format(pattern, segments[k].splat), level + 1)
    end
  end
  return segments
end

local function is_static(segments)
  for _, s in ipairs(segments) do if not s.literal then return false end end
  return true
end

---------------------------------------------------------------------------
-- Building (where the router is made: plain data only)

local function method_list(method_or_list, level)
  local list = type(method_or_list) == "table" and method_or_list or {method_or_list}
  local out = {}
  if #list == 0 then fail("a route needs at least one method", level + 1) end
  for i, m in ipairs(list) do
    if type(m) ~= "string" or not METHODS[m:upper()] then
      fail(("unknown method %s (GET, POST, PUT, DELETE, PATCH, HEAD or OPTIONS)"):format(
        type(m) == "string" and ("%q"):format(m) or "(a " .. type(m) .. ")"), level + 1)
    end
    out[i] = m:upper()
  end
  return out
end

-- Adds a route {methods=, pattern=, handler= | static= | websocket=}.
local function add(self, methods, pattern, route, level)
  parse_pattern(pattern, level + 1) -- refuses a bad pattern now
  route.methods, route.pattern = method_list(methods, level + 1), pattern
  self.routes[#self.routes + 1] = route
  return self
end

--- router:route(method_or_list, pattern, handler(request)).
function Router:route(methods, pattern, handler)
  if type(handler) ~= "function" then fail("handler must be a function(request)", 2) end
  return add(self, methods, pattern, {handler = handler}, 2)
end

for _, method in ipairs {"get", "post", "put", "delete", "patch"} do
  local upper = method:upper()
  Router[method] = function(self, pattern, handler)
    if type(handler) ~= "function" then fail("handler must be a function(request)", 2) end
    return add(self, upper, pattern, {handler = handler}, 2)
  end
end

--- router:use(fn(request, next)): middleware around every route (see the
-- head of this file).
function Router:use(fn)
  if type(fn) ~= "function" then fail("middleware must be a function(request, next)", 2) end
  self.middleware[#self.middleware + 1] = fn
  return self
end

--- router:static(prefix, dir [, {index = "index.html" | false, max_age = s}]):
-- the files under `dir` at `prefix` (lua/pulsar/static.lua).
function Router:static(prefix, dir, opts)
  if type(prefix) ~= "string" or not prefix:find("^/") then
    fail("static: prefix must be a path starting with '/'", 2)
  end
  local config = require("pulsar.static").config(dir, opts, 3)
  prefix = prefix:gsub("/+$", "")
  config.prefix = prefix
  return add(self, {"GET"}, prefix .. "/*path", {static = config}, 2)
end

--- router:websocket(pattern, fn(ws) [, opts]): a GET route that upgrades
-- to WebSocket (pulsar.websocket.upgrade(request, fn, opts)).
function Router:websocket(pattern, fn, opts)
  if type(fn) ~= "function" then fail("websocket: handler must be a function(ws)", 2) end
  if opts ~= nil and type(opts) ~= "table" then fail("websocket: opts must be a table", 2) end
  return add(self, {"GET"}, pattern, {websocket = fn, websocket_opts = opts}, 2)
end

---------------------------------------------------------------------------
-- Compiling (in the worker, once)

-- The handler function of a route.
local function route_handler(route)
  if route.handler then return route.handler end
  if route.static then return require("pulsar.static").handler(route.static) end
  local fn, opts = route.websocket, route.websocket_opts
  return function(request)
    return require("pulsar.websocket").upgrade(request, fn, opts)
  end
end

-- "GET, HEAD, POST": the Allow value of a set of methods.
local function allow_of(methods)
  local list = {}
  for m in pairs(methods) do list[#list + 1] = m end
  if methods.GET and not methods.HEAD then list[#list + 1] = "HEAD" end
  table.sort(list)
  return table.concat(list, ", ")
end

-- Adds the handler for each method a node has none for yet (the first
-- route added wins).
local function node_add(node, methods, handler)
  for _, m in ipairs(methods) do
    if node[m] == nil then node[m] = handler end
  end
end

local function compile_routes(routes)
  local exact, patterns, by_pattern = {}, {}, {}
  for _, route in ipairs(routes) do
    local handler = route_handler(route)
    local segments = parse_pattern(route.pattern, 3)
    local node
    if is_static(segments) then
      node = exact[route.pattern]
      if not node then node = {handlers = {}} exact[route.pattern] = node end
    else
      node = by_pattern[route.pattern]
      if not node then
        local last = segments[#segments]
        node = {handlers = {}, segments = segments, count = #segments,
                splat = last.splat}
        if node.splat then node.count = node.count - 1 end
        by_pattern[route.pattern] = node
        patterns[#patterns + 1] = node
      end
    end
    node_add(node.handlers, route.methods, handler)
  end
  for _, node in pairs(exact) do node.allow = allow_of(node.handlers) end
  for _, node in ipairs(patterns) do node.allow = allow_of(node.handlers) end
  return exact, patterns
end

local http_unescape
local function unescape(s)
  http_unescape = http_unescape or require("pulsar.http").unescape
  return http_unescape(s)
end

-- The path as sent (the target up to '?'), for the patterns; the decoded
-- path when the target is in absolute form.
local function raw_path(request)
  local target = request.target
  if target == request.path then return target end
  if type(target) ~= "string" or target:sub(1, 1) ~= "/" then return request.path end
  local q = target:find("?", 1, true)
  return q and target:sub(1, q - 1) or target
end

-- Cuts `raw` at '/' into SEGMENTS (decoded) and STARTS (where each began
-- in raw): a scratch list shared by every request, since nothing yields
-- while a path is matched. Returns the count.
local SEGMENTS, STARTS = {}, {}
local function split(raw)
  local n, pos, len = 0, 2, #raw
  while true do
    local slash = raw:find("/", pos, true)
    local segment = raw:sub(pos, (slash or len + 1) - 1)
    if segment:find("%", 1, true) then segment = unescape(segment) end
    n = n + 1
    SEGMENTS[n], STARTS[n] = segment, pos
    if not slash then break end
    pos = slash + 1
  end
  for i = n + 1, #SEGMENTS do SEGMENTS[i], STARTS[i] = nil, nil end
  return n
end

-- The params of `node` for the path cut into n segments, or nil.
local function match(node, n, raw)
  local count, segments = node.count, node.segments
  if node.splat then
    if n < count then return nil end
  elseif n ~= count then
    return nil
  end
  local params
  for i = 1, count do
    local want, got = segments[i], SEGMENTS[i]
    if want.literal then
      if want.literal ~= got then return nil end
    else
      if got == "" then return nil end
      params = params or {}
      params[want.param] = got
    end
  end
  params = params or {}
  if node.splat then
    local start = STARTS[count + 1]
    local rest = start and raw:sub(start) or ""
    if rest:find("%", 1, true) then rest = unescape(rest) end
    params[node.splat] = rest
  end
  return params
end

local function handler_of(handlers, method)
  return handlers[method] or (method == "HEAD" and handlers.GET) or nil
end

-- values counted, so that `return 200, nil` and `return 200` differ from
-- `return 200, {json}`
local function count(...) return select("#", ...), ... end

-- What a route's handler returned, as status, headers, body; a table with
-- a metatable as the only value (a WebSocket upgrade) goes on alone.
local function normalize(n, a, b, c)
  if a == nil then return 200, nil, "" end
  if math.type(a) == "integer" then
    if n >= 3 then return a, b, c end
    if n == 2 then return a, nil, b end
    return a, nil, ""
  end
  if type(a) == "table" and getmetatable(a) ~= nil then return a end
  return 200, nil, a
end

-- The innermost step of the chain: finds the route and calls it, handing
-- what it returned, counted, to `out` (normalize under middleware, else
-- normalize and the JSON rule at once: one call less on the hot path).
local function dispatcher(exact, patterns, out)
  return function(request)
    local method, path = request.method, request.path
    local raw = request.target
    if raw ~= path then raw = raw_path(request) end
    local allow
    if raw == path or not raw:find("%%2[fF]") then
      local node = exact[path]
      if node then
        local handlers = node.handlers
        local handler = handlers[method] or (method == "HEAD" and handlers.GET)
        if handler then
          request.params = {}
          return out(count(handler(request)))
        end
        allow = node.allow
      end
    end
    if patterns[1] then
      local n = split(raw)
      local allowed
      for i = 1, #patterns do
        local node = patterns[i]
        local params = match(node, n, raw)
        if params then
          local handler = handler_of(node.handlers, method)
          if handler then
            request.params = params
            return out(count(handler(request)))
          end
          allowed = allowed or {}
          for m in pairs(node.handlers) do allowed[m] = true end
        end
      end
      if allowed then
        if allow then for m in allow:gmatch("[^, ]+") do allowed[m] = true end end
        allow = allow_of(allowed)
      end
    end
    if allow then
      return out(3, 405, {Allow = allow}, ("Method Not Allowed: %s %s\n"):format(method, path))
    end
    return out(3, 404, nil, "Not Found: " .. path .. "\n")
  end
end

local JSON_HEADERS = {["Content-Type"] = "application/json"}

local function has_type(headers)
  for name in pairs(headers) do
    if type(name) == "string" and name:lower() == "content-type" then return true end
  end
  return false
end

local NO_HEADERS = setmetatable({}, {__newindex = function()
  error("Router: the shared empty headers cannot change; make a table of your own", 2)
end})

-- The router's JSON rule, after the middleware; what pulsar.http reads
-- (its `status, body` when there are no headers, for a table there would
-- be headers).
local function finish(status, headers, body)
  if type(status) == "table" then return status end -- an upgrade, whatever a middleware added
  if type(body) ~= "table" then
    if headers == nil then return status, body end
    return status, headers, body
  end
  if getmetatable(body) ~= nil then return status, headers or NO_HEADERS, body end
  json_encode = json_encode or require("pulsar.json").encode
  body = json_encode(body)
  if headers == nil then return status, JSON_HEADERS, body end
  if has_type(headers) then return status, headers, body end
  local copy = {["Content-Type"] = "application/json"}
  for k, v in pairs(headers) do copy[k] = v end
  return status, copy, body
end

--- The handler function for pulsar.http of a router (or of one that
-- crossed into this VM): compiled once, here.
function M.handler(router)
  if not M.is_router(router) then error("Router.handler: not a router", 2) end
  if getmetatable(router) == nil then setmetatable(router, Router) end -- it crossed
  local exact, patterns = compile_routes(router.routes)
  local middleware = router.middleware or {}
  if #middleware == 0 then
    return dispatcher(exact, patterns, function(n, a, b, c) return finish(normalize(n, a, b, c)) end)
  end
  local chain = dispatcher(exact, patterns, normalize)
  for i = #middleware, 1, -1 do
    local fn, after = middleware[i], chain
    chain = function(request) return normalize(count(fn(request, after))) end
  end
  return function(request) return finish(chain(request)) end
end

return M
