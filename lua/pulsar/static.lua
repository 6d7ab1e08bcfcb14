--- pulsar.static: the files under a directory, served by router:static
-- (lua/pulsar/router.lua; docs/API.md §2, "Router and static files").
--
--   router:static("/static", "public", {index = "index.html", max_age = 3600})
--
-- A file goes out with sendfile(2): the handler answers with a file body
-- (pulsar.http.file_body) and the transport queues the range behind the
-- head (host/transport/net.c), so its bytes never pass through Lua. What
-- the handler does before, per request:
--   * the path under the prefix (request.params.path, already decoded) is
--     refused (404) if it has a NUL, a "." or ".." segment or an empty one:
--     "%2e%2e" and "..%2f" are decoded before this check, so they are
--     caught as the plain ".." is;
--   * the file's real path (realpath(3): every symlink resolved) must lie
--     inside the directory's own real path, else 404: a symlink out of the
--     tree serves nothing, one inside it works;
--   * both lookups (realpath, stat) run on libuv's thread pool
--     (core.fs_realpath, core.fs_stat: host/bind/lfs.c), so a slow disk
--     stalls a pool thread, not the loop; the handler waits on them as on
--     any Future;
--   * ETag (from the size and the modification time, in nanoseconds) and
--     Last-Modified; If-None-Match, else If-Modified-Since, answers 304;
--   * Range: one range (bytes=a-b, a-, -n) answers 206 with
--     Content-Range; one past the end 416; several ranges, or a Range
--     that does not parse, are ignored (the whole file, as RFC 9110
--     allows); If-Range with another validator also means the whole file;
--   * a directory: with `index`, its index file, and /dir answered 301 to
--     /dir/; without, 404;
--   * HEAD is the router's GET without a body (pulsar.http).
local core = require "pulsar.core"
local future = require "pulsar.future"
local http = require "pulsar.http"
local log = require "pulsar.log"

local M = {}

-- Content types by extension (lower case); others are
-- application/octet-stream.
M.TYPES = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
  mjs = "text/javascript; charset=utf-8", json = "application/json",
  txt = "text/plain; charset=utf-8", md = "text/markdown; charset=utf-8",
  csv = "text/csv; charset=utf-8", xml = "application/xml", lua = "text/plain; charset=utf-8",
  svg = "image/svg+xml", png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg",
  gif = "image/gif", webp = "image/webp", ico = "image/vnd.microsoft.icon",
  avif = "image/avif", bmp = "image/bmp",
  woff = "font/woff", woff2 = "font/woff2", ttf = "font/ttf", otf = "font/otf",
  mp3 = "audio/mpeg", ogg = "audio/ogg", wav = "audio/wav", mp4 = "video/mp4",
  webm = "video/webm", pdf = "application/pdf", zip = "application/zip",
  gz = "application/gzip", tar = "application/x-tar", wasm = "application/wasm",
}
local DEFAULT_TYPE = "application/octet-stream"

local function fail(message, level) error("Router: static: " .. message, level + 1) end

--- The plain data of a static route, checked (router:static calls this
-- where the router is made).
function M.config(dir, opts, level)
  level = level or 1
  if type(dir) ~= "string" or dir == "" then fail("dir must be a directory's path", level + 1) end
  if dir:find("%z") then fail("dir has a NUL byte", level + 1) end
  opts = opts or {}
  if type(opts) ~= "table" then fail("opts must be a table", level + 1) end
  for k in pairs(opts) do
    if k ~= "index" and k ~= "max_age" then fail(("unknown option %q (index, max_age)"):format(tostring(k)), level + 1) end
  end
  local index = opts.index
  if index == true then index = "index.html" end
  if index ~= nil and index ~= false and (type(index) ~= "string" or index == "" or index:find("[/%z]")) then
    fail("index must be a file name (\"index.html\") or false", level + 1)
  end
  local max_age = opts.max_age
  if max_age ~= nil and (math.type(max_age) ~= "integer" or max_age < 0) then
    fail("max_age must be an integer number of seconds from 0", level + 1)
  end
  return {dir = dir, index = index or false, max_age = max_age}
end

---------------------------------------------------------------------------
-- Lookups on the thread pool, as Futures' waits

local function lookup(fn, path)
  local f = future.Future("file lookup")
  fn(path, function(value, err, code) f:set_result({value, err, code}) end)
  local answer = f:wait()
  return answer[1], answer[2], answer[3]
end

local function realpath(path) return lookup(core.fs_realpath, path) end
local function stat(path) return lookup(core.fs_stat, path) end

---------------------------------------------------------------------------
-- Dates (If-Modified-Since)

local MONTHS = {Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7,
                Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12}

-- Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Seconds since the epoch of an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37
-- GMT"), or nil.
function M.parse_date(text)
  local d, mon, y, hh, mm, ss = text:match(
    "^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = MONTHS[mon]
  if not m then return nil end
  return days_from_civil(tonumber(y), m, tonumber(d)) * 86400 +
         tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
end

---------------------------------------------------------------------------
-- Ranges

--- The first and last byte of a Range header for a file of `size` bytes:
-- first, last; or "unsatisfiable"; or nil (no Range, or one to ignore).
function M.parse_range(header, size)
  if not header then return nil end
  local a, b = header:match("^bytes=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end -- several ranges, or not one
  if #a > 18 or #b > 18 then return nil end -- no integer that large: ignored
  if a == "" then -- the last b bytes
    local n = tonumber(b)
    if n == 0 or size == 0 then return "unsatisfiable" end
    return math.max(size - n, 0), size - 1
  end
  local first = tonumber(a)
  local last = b ~= "" and tonumber(b) or size - 1
  if b ~= "" and last < first then return nil end -- not a range: ignored
  if first >= size then return "unsatisfiable" end
  return first, math.min(last, size - 1)
end

---------------------------------------------------------------------------
-- The handler

-- Whether the path under the prefix may name a file: no NUL, no ".", ".."
-- or empty segment (a last empty one is a directory's trailing slash).
local function safe(rel)
  if rel:find("%z") or rel:find("\\", 1, true) then return false end
  if rel == "" then return true end
  local i, n = 0, select(2, rel:gsub("/", "")) + 1
  for segment in (rel .. "/"):gmatch("([^/]*)/") do
    i = i + 1
    if segment == "." or segment == ".." then return false end
    if segment == "" and i < n then return false end
  end
  return true
end

local function inside(real, root)
  if real == root then return true end
  local prefix = root:sub(-1) == "/" and root or root .. "/"
  return real:sub(1, #prefix) == prefix
end

local function not_found(request)
  return 404, nil, "Not Found: " .. request.path .. "\n"
end

local function etag_of(st)
  return ('"%x-%x%09x"'):format(st.size, st.mtime, st.mtime_ns)
end

-- Whether an If-None-Match list names `etag` (weakly, as GET compares).
local function none_match(header, etag)
  if header:find("^%s*%*%s*$") then return true end
  local bare = etag:sub(2, -2)
  for tag in header:gmatch('"([^"]*)"') do
    if tag == bare then return true end
  end
  return false
end

local function not_modified(request, etag, st)
  local headers = request.headers
  local inm = headers["if-none-match"]
  if inm then return none_match(inm, etag) end
  local ims = headers["if-modified-since"]
  if ims then
    local since = M.parse_date(ims)
    return since ~= nil and st.mtime <= since
  end
  return false
end

-- The answer for the regular file at `real` (already checked), stat `st`.
local function answer_file(request, config, real, st)
  local etag = etag_of(st)
  local headers = {
    ETag = etag, ["Last-Modified"] = http.date(st.mtime), ["Accept-Ranges"] = "bytes",
  }
  if config.max_age then headers["Cache-Control"] = "max-age=" .. config.max_age end
  if not_modified(request, etag, st) then return 304, headers, "" end
  local ext = real:match("%.([^./]+)$")
  headers["Content-Type"] = ext and M.TYPES[ext:lower()] or DEFAULT_TYPE
  local size = st.size
  local range = request.headers.range
  local if_range = request.headers["if-range"]
  if range and if_range and if_range ~= etag and if_range ~= headers["Last-Modified"] then
    range = nil -- the client's copy is another version: the whole file
  end
  local first, last = M.parse_range(range, size)
  if first == "unsatisfiable" then
    headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["Content-Range"] = "bytes */" .. size
    return 416, headers, ("Range Not Satisfiable: %s for %d bytes\n"):format(range, size)
  end
  if first then
    headers["Content-Range"] = ("bytes %d-%d/%d"):format(first, last, size)
    return 206, headers, http.file_body(real, first, last - first + 1)
  end
  return 200, headers, http.file_body(real, 0, size)
end

--- The handler of a static route (in the worker, from its config).
function M.handler(config)
  local root -- the directory's real path, found at the first request
  return function(request)
    local rel = request.params.path or ""
    if not safe(rel) then return not_found(request) end
    if not root then
      local real, err = realpath(config.dir)
      if not real then
        log.error("static files: %s", err)
        return not_found(request)
      end
      root = real
    end
    local path = rel == "" and root or root .. "/" .. rel
    local real = realpath(path)
    if not real or not inside(real, root) then return not_found(request) end
    local st = stat(real)
    if not st then return not_found(request) end
    if st.type == "directory" then
      if not config.index then return not_found(request) end
      if rel ~= "" and rel:sub(-1) ~= "/" or rel == "" and request.path:sub(-1) ~= "/" then
        local location = request.target:gsub("^([^?]*)", "%1/", 1)
        return 301, {Location = location}, "Moved Permanently: " .. location .. "\n"
      end
      real = realpath(real .. "/" .. config.index)
      if not real or not inside(real, root) then return not_found(request) end
      st = stat(real)
      if not st then return not_found(request) end
    end
    if st.type ~= "file" then return not_found(request) end
    return answer_file(request, config, real, st)
  end
end

return M
