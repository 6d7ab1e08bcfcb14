--- pulsar.apps.rpc: JSON-RPC 2.0 over HTTP, both sides (docs/API.md §2,
-- "JSON-RPC").
--
--   local rpc = pulsar.apps.rpc
--   pulsar.apps.HttpServer{bind = ":8080", handler = rpc.handler{methods = {
--     add = function(a, b) return a + b end,
--   }}}
--   rpc.proxy("http://127.0.0.1:8080/"):call("add", 1, 2):wait()  --> 3
--
-- The server side is a plain HTTP handler, function(request) -> status,
-- headers, body, so it serves alone or as a router's route. It keeps the
-- whole specification (https://www.jsonrpc.org/specification): params by
-- position (the method gets them as arguments, a null as nil) or by name
-- (the method gets the object as one table); notifications (no id: no
-- answer, and a request of only notifications is answered 204 with no
-- body); batches, whose calls run concurrently, each in a task of its own,
-- answered in their order; and the error codes:
--   -32700 the body is not JSON         -32600 not a valid request
--   -32601 no such method               -32602 invalid params (a method
--   -32603 a Lua error in a method        raises rpc.error(-32602, ...))
-- A method's Lua error is logged with its traceback and answered -32603
-- "Internal error" without its text: a client learns nothing of the code.
-- rpc.error(code, message [, data]) raises an application error that is
-- answered as given. Methods run in the request's task, so they may wait on
-- Futures (an actor's answer, an HTTP request).
--
-- Answers are HTTP 200 with Content-Type application/json whatever the
-- outcome, as JSON-RPC over HTTP usually has it; a method other than POST is
-- 405 with Allow: POST.
--
-- The handler crosses into an HttpServer's workers by value, so it holds
-- only plain data (the methods table and its options) and finds this module
-- again on the other side; a method, crossing with it, must itself be able
-- to (no upvalue that is a module or a userdata: require inside it).
--
-- The client, rpc.proxy(url), calls through pulsar.http (keep-alive
-- connections, a timeout per call): proxy:call(method, ...) is a Future of
-- the result; a JSON-RPC error fails it with an rpc error object (fields
-- code, message, data; tostring "rpc: METHOD: error CODE: MESSAGE").
local future = require "pulsar.future"
local json = require "pulsar.json"
local log = require "pulsar.log"

local M = {
  PARSE_ERROR = -32700, INVALID_REQUEST = -32600, METHOD_NOT_FOUND = -32601,
  INVALID_PARAMS = -32602, INTERNAL_ERROR = -32603,
  MAX_BATCH = 1000, -- calls in one batch, by default
}

local MESSAGES = {
  [-32700] = "Parse error", [-32600] = "Invalid Request", [-32601] = "Method not found",
  [-32602] = "Invalid params", [-32603] = "Internal error",
}

local null = json.null
local JSON_HEADERS = {["Content-Type"] = "application/json"}

---------------------------------------------------------------------------
-- Errors

local RpcError = {__name = "pulsar.apps.rpc.Error"}
RpcError.__index = RpcError
function RpcError:__tostring()
  local where = self.method and ("rpc: %s: "):format(self.method) or "rpc: "
  return ("%serror %d: %s"):format(where, self.code, self.message)
end

--- rpc.error(code, message [, data]): raises a JSON-RPC error, answered as
-- {code=, message=, data=}. code is an integer (-32602 for invalid params;
-- an application's own outside -32768..-32000).
function M.error(code, message, data)
  if math.type(code) ~= "integer" then error("rpc.error: code must be an integer", 2) end
  error(setmetatable({code = code, message = tostring(message or MESSAGES[code] or "error"),
                      data = data}, RpcError), 2)
end

--- Whether v is an error raised by rpc.error (or a proxy's failed call).
function M.is_error(v) return getmetatable(v) == RpcError end

---------------------------------------------------------------------------
-- The server side

local function error_response(id, code, message, data)
  return {jsonrpc = "2.0", id = id == nil and null or id,
          error = {code = code, message = message or MESSAGES[code], data = data}}
end

local function is_list(t)
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local function valid_id(id)
  local t = type(id)
  return id == null or t == "string" or t == "number"
end

-- Runs one call; its response object, or nil for a notification.
local function call_one(methods, call)
  if type(call) ~= "table" or is_list(call) and next(call) ~= nil then
    return error_response(nil, M.INVALID_REQUEST)
  end
  local id, notification = call.id, call.id == nil
  if not notification and not valid_id(id) then return error_response(nil, M.INVALID_REQUEST) end
  local params = call.params
  if call.jsonrpc ~= "2.0" or type(call.method) ~= "string" or
     (params ~= nil and type(params) ~= "table") then
    return error_response(id, M.INVALID_REQUEST)
  end
  local name = call.method
  local method = not name:find("^rpc%.") and rawget(methods, name)
  if type(method) ~= "function" then
    return not notification and error_response(id, M.METHOD_NOT_FOUND) or nil
  end
  local ok, result
  if params == nil or next(params) == nil then
    ok, result = xpcall(method, debug.traceback)
  elseif is_list(params) then
    local n = #params
    for i = 1, n do if params[i] == null then params[i] = nil end end
    ok, result = xpcall(method, debug.traceback, table.unpack(params, 1, n))
  else
    ok, result = xpcall(method, debug.traceback, params)
  end
  if notification then
    if not ok and not M.is_error(result) then log.error("rpc: method %s failed: %s", name, tostring(result)) end
    return nil
  end
  if ok then return {jsonrpc = "2.0", id = id, result = result == nil and null or result} end
  if M.is_error(result) then return error_response(id, result.code, result.message, result.data) end
  log.error("rpc: method %s failed: %s", name, tostring(result))
  return error_response(id, M.INTERNAL_ERROR)
end

-- A result a method returned that JSON cannot carry is the server's fault.
local function encode(methods_response)
  local ok, text = pcall(json.encode, methods_response)
  if ok then return text end
  log.error("rpc: cannot encode a response: %s", tostring(text))
  return nil
end

local function encode_one(response)
  return encode(response) or json.encode(error_response(response.id, M.INTERNAL_ERROR))
end

-- The calls of a batch, each in a task, concurrently; responses in order.
local function run_batch(methods, calls)
  local tasks = {}
  for i, call in ipairs(calls) do tasks[i] = future.async(call_one, methods, call) end
  local texts = {}
  for _, task in ipairs(tasks) do
    local response = task:wait()
    if response then texts[#texts + 1] = encode_one(response) end
  end
  return texts
end

--- The answer to one HTTP request (the handler's body): status, headers,
-- body.
function M.serve(spec, request)
  if request.method ~= "POST" then
    return 405, {Allow = "POST", ["Content-Type"] = "text/plain"}, "JSON-RPC wants POST\n"
  end
  local ok, doc = pcall(json.decode, request.body)
  if not ok or doc == null then
    local why = not ok and tostring(doc):gsub("^json%.decode: ", "") or nil
    return 200, JSON_HEADERS, json.encode(error_response(nil, M.PARSE_ERROR, nil, why))
  end
  if type(doc) == "table" and is_list(doc) then
    if #doc == 0 then return 200, JSON_HEADERS, json.encode(error_response(nil, M.INVALID_REQUEST)) end
    if #doc > spec.max_batch then
      return 200, JSON_HEADERS, json.encode(error_response(nil, M.INVALID_REQUEST,
        ("a batch of more than %d calls"):format(spec.max_batch)))
    end
    local texts = run_batch(spec.methods, doc)
    if #texts == 0 then return 204, nil, "" end
    return 200, JSON_HEADERS, "[" .. table.concat(texts, ",") .. "]"
  end
  local response = call_one(spec.methods, doc)
  if not response then return 204, nil, "" end
  return 200, JSON_HEADERS, encode_one(response)
end

--- rpc.handler{methods = {name = function(...) ... end}, max_batch = N}:
-- an HTTP handler (function(request) -> status, headers, body) that
-- answers JSON-RPC 2.0.
function M.handler(opts)
  if type(opts) ~= "table" or type(opts.methods) ~= "table" then
    error("rpc.handler: needs {methods = {name = function, ...}}", 2)
  end
  for name, fn in pairs(opts.methods) do
    if type(name) ~= "string" or type(fn) ~= "function" then
      error(("rpc.handler: method %s must be a function named by a string"):format(tostring(name)), 2)
    end
  end
  local max_batch = opts.max_batch or M.MAX_BATCH
  if math.type(max_batch) ~= "integer" or max_batch < 1 then
    error("rpc.handler: max_batch must be a whole number from 1", 2)
  end
  -- plain data only: this closure crosses into the workers by value
  local spec = {methods = opts.methods, max_batch = max_batch}
  return function(request) return require("pulsar.apps.rpc").serve(spec, request) end
end

---------------------------------------------------------------------------
-- The client side

local Proxy = {}
Proxy.__index = Proxy
Proxy.__name = "pulsar.apps.rpc.Proxy"
function Proxy:__tostring() return ("rpc.proxy(%s)"):format(self.url) end

--- rpc.proxy(url [, {timeout=, headers=}]): a client of the JSON-RPC
-- server at url.
function M.proxy(url, opts)
  require("pulsar.httpclient").parse_url(url) -- refuses a bad URL now
  opts = opts or {}
  return setmetatable({url = url, timeout = opts.timeout, headers = opts.headers, next_id = 0}, Proxy)
end

-- Positional arguments as a JSON list, nil as null; nil for none.
local function positional(n, ...)
  if n == 0 then return nil end
  local params = {...}
  for i = 1, n do if params[i] == nil then params[i] = null end end
  return params
end

function Proxy:_post(body)
  local headers = {["Content-Type"] = "application/json"}
  for k, v in pairs(self.headers or {}) do headers[k] = v end
  local r = require("pulsar.httpclient").request{method = "POST", url = self.url, headers = headers,
                                                body = body, timeout = self.timeout}:wait()
  if r.status == 204 then return nil end
  if r.status ~= 200 then
    error(("rpc: %s answered HTTP %d: %s"):format(self.url, r.status, r.body:sub(1, 200)), 0)
  end
  local ok, doc = pcall(json.decode, r.body)
  if not ok then error(("rpc: %s answered with a body that is not JSON: %s"):format(self.url, doc), 0) end
  return doc
end

local function result_of(method, response)
  if type(response) ~= "table" then error(("rpc: %s: not a JSON-RPC response"):format(method), 0) end
  local e = response.error
  if e ~= nil then
    if type(e) ~= "table" then error(("rpc: %s: a malformed error"):format(method), 0) end
    error(setmetatable({method = method, code = math.tointeger(e.code) or -32603,
                        message = tostring(e.message), data = e.data}, RpcError), 0)
  end
  local result = response.result
  if result == null then return nil end
  return result
end

function Proxy:_id()
  self.next_id = self.next_id + 1
  return self.next_id
end

--- proxy:call(method, ...): a Future of the method's result (null is nil);
-- a JSON-RPC error fails it with an rpc error (err.code, err.message,
-- err.data).
function Proxy:call(method, ...)
  if type(method) ~= "string" then error("proxy:call: method must be a string", 2) end
  local id = self:_id()
  local body = json.encode{jsonrpc = "2.0", method = method, params = positional(select("#", ...), ...), id = id}
  return future.async(function()
    local response = self:_post(body)
    if type(response) == "table" and response.id ~= id and response.id ~= null then
      error(("rpc: %s: the answer has id %s, not %d"):format(method, tostring(response.id), id), 0)
    end
    return result_of(method, response)
  end)
end

--- proxy:call_named(method, params): a call with params by name (a table).
function Proxy:call_named(method, params)
  if type(method) ~= "string" then error("proxy:call_named: method must be a string", 2) end
  if type(params) ~= "table" then error("proxy:call_named: params must be a table", 2) end
  local id = self:_id()
  local body = json.encode{jsonrpc = "2.0", method = method, params = params, id = id}
  return future.async(function() return result_of(method, self:_post(body)) end)
end

--- proxy:notify(method, ...): a Future resolved once the server has the
-- notification (JSON-RPC gives no answer to one).
function Proxy:notify(method, ...)
  if type(method) ~= "string" then error("proxy:notify: method must be a string", 2) end
  local body = json.encode{jsonrpc = "2.0", method = method, params = positional(select("#", ...), ...)}
  return future.async(function() self:_post(body) return true end)
end

--- proxy:batch{{"add", 1, 2}, {"sub", 5, 3}}: one request for many calls;
-- a Future of a list, in the calls' order, of {result = value} or
-- {error = rpc error}.
function Proxy:batch(calls)
  if type(calls) ~= "table" or #calls == 0 then error("proxy:batch: needs a list of {method, args...}", 2) end
  local list, ids = {}, {}
  for i, c in ipairs(calls) do
    if type(c) ~= "table" or type(c[1]) ~= "string" then
      error(("proxy:batch: call %d must be {method, args...}"):format(i), 2)
    end
    ids[i] = self:_id()
    local n = (c.n or #c) - 1
    list[i] = {jsonrpc = "2.0", method = c[1], params = positional(n, table.unpack(c, 2, n + 1)), id = ids[i]}
  end
  local body = json.encode(list)
  return future.async(function()
    local responses = self:_post(body)
    if type(responses) ~= "table" then error(("rpc: %s: a batch answered with no list"):format(self.url), 0) end
    local by_id = {}
    for _, r in ipairs(responses) do if type(r) == "table" then by_id[r.id] = r end end
    local out = {}
    for i, id in ipairs(ids) do
      local ok, value = pcall(result_of, calls[i][1], by_id[id] or {error = {code = M.INTERNAL_ERROR,
                                                                   message = "no answer in the batch"}})
      out[i] = ok and {result = value} or {error = value}
    end
    return out
  end)
end

return M
