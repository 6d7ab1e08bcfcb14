--- pulsar.json: JSON on Debian's lua-cjson (docs/API.md §2, "JSON").
--
--   pulsar.json.encode({a = 1, list = {1, 2}})  --> '{"a":1,"list":[1,2]}'
--   pulsar.json.decode('[1, "x", null]')         --> {1, "x", pulsar.json.null}
--
-- lua-cjson is C, fast and well kept; this module only gives it pulsar's
-- manners: an instance of its own (cjson.new, so another library's settings
-- are not ours), errors that start with "json.encode:" or "json.decode:"
-- and keep lua-cjson's words, which name the position ("Expected value but
-- found invalid token at character 6"), and a bounded depth both ways.
--
-- What JSON cannot say the way Lua does, and what is chosen:
--   * `null` decodes to `json.null` (a light userdata), which encodes back
--     to null; a nil inside a list cannot be, so use json.null there;
--   * an empty table encodes as `{}`, a table whose keys are 1..n as a list
--     (a few holes become nulls; a list mostly of holes is an error,
--     "excessively sparse array", rather than a guess);
--   * lua-cjson decodes every number as a float; decode gives back an
--     integer for a number with an integral value (`3`, and `3.0` too:
--     JSON has one kind of number), so `decode("[3]")[1]` prints 3;
--   * numbers keep 14 significant digits (lua-cjson 2.1's most), so an
--     integer above 2^46 or so may come back rounded: send such ids as
--     strings; NaN and infinities are refused.
local cjson = require("cjson").new()

local M = {}

M.null = cjson.null

-- Deep enough for any document a person writes; a hostile one stops here
-- rather than at the C stack.
local DEPTH = 128
cjson.encode_max_depth(DEPTH)
cjson.decode_max_depth(DEPTH)
cjson.encode_number_precision(14)
cjson.encode_sparse_array(false, 2, 10) -- a list with holes: the error, not an object
cjson.encode_invalid_numbers(false)
cjson.decode_invalid_numbers(false) -- no NaN, Infinity, hexadecimal

local encode, decode = cjson.encode, cjson.decode

--- The JSON text of `value`; raises "json.encode: WHY".
function M.encode(value)
  local ok, text = pcall(encode, value)
  if not ok then error("json.encode: " .. tostring(text), 2) end
  return text
end

local tointeger = math.tointeger

-- Integral floats to integers, in place, through the tables decode made
-- (no cycles; depth bounded by DEPTH).
local function integers(t)
  for k, v in next, t do
    local kind = type(v)
    if kind == "number" then
      local i = tointeger(v)
      if i then t[k] = i end
    elseif kind == "table" then
      integers(v)
    end
  end
  return t
end

local function decoded(text)
  local value = decode(text)
  if type(value) == "table" then return integers(value) end
  if type(value) == "number" then return tointeger(value) or value end
  return value
end

--- The value of JSON `text`; raises "json.decode: WHY at character N".
function M.decode(text)
  if type(text) ~= "string" then
    error("json.decode: expected a string, got a " .. type(text), 2)
  end
  local ok, value = pcall(decoded, text)
  if not ok then error("json.decode: " .. tostring(value), 2) end
  return value
end

--- For request:json(): the value of a body, or nil and the reason.
function M.decode_body(body)
  if body == nil or body == "" then return nil, "the body is empty" end
  local ok, value = pcall(decoded, body)
  if not ok then return nil, tostring(value) end
  return value
end

return M
