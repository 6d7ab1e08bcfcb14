--- pulsar.pretty: Lua values as readable, bounded Lua constructors, for the
-- REPL (pulsar.repl_session) and for anyone printing an info table.
--
--   pretty.format({b = {1, 2}, a = "x"})   --> {a = "x", b = {1, 2}}
--
-- Tables are written as constructors: the sequence part first, without
-- keys, then the other keys sorted (numbers, then strings, then the rest),
-- identifier keys unquoted. A table that fits in the line width stays on
-- one line; a longer one gets a line per field, indented. Everything is
-- bounded, so printing a huge or cyclic value stays short and safe:
--   - a table already open on the way down is written `<cycle>`;
--   - below `depth` levels a table is written `{...}`;
--   - past `items` fields a table ends with `... (N more)`;
--   - past `string` bytes a string ends with `... (N more bytes)`;
--   - past `budget` fields in all, the rest are elided the same way.
-- Strings are quoted with %q-like escapes (\n, \t, \", \\, \ddd for other
-- control bytes); values with a __tostring metamethod (Futures, actor
-- proxies) are written with it. Metamethods are otherwise ignored: fields
-- are read with next and rawget, so printing never runs user code but
-- __tostring.
local M = {}

local DEFAULTS = {depth = 5, items = 40, string = 200, width = 80, budget = 1000}

local KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in
  local nil not or repeat return then true until while]]):gmatch("%a+") do
  KEYWORDS[word] = true
end

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[s]
end
M.is_identifier = is_identifier

local ESCAPES = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r",
                 ["\t"] = "\\t", ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f",
                 ["\v"] = "\\v"}

-- A control byte followed by a digit needs all three digits (\0012 is not
-- \001 then "2" otherwise).
local function escape_control(c, after)
  local code = c:byte()
  if after ~= "" then return ("\\%03d"):format(code) .. after end
  return "\\" .. code
end

local function quote(s, limit)
  local shown, more = s, 0
  if #s > limit then shown, more = s:sub(1, limit), #s - limit end
  shown = shown:gsub('[%c"\\]', ESCAPES):gsub("(%c)(%d?)", escape_control)
  local out = '"' .. shown .. '"'
  if more > 0 then out = out .. ("... (%d more bytes)"):format(more) end
  return out
end
M.quote = function(s, limit) return quote(s, limit or math.huge) end

local function number(n)
  if n ~= n then return "0/0" end
  if n == math.huge then return "math.huge" end
  if n == -math.huge then return "-math.huge" end
  if math.type(n) == "float" and n == math.floor(n) and math.abs(n) < 2^53 then
    return ("%.1f"):format(n) -- keeps 1.0 a float when read back
  end
  return tostring(n)
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

local function scalar(v, opts)
  local kind = type(v)
  if kind == "string" then return quote(v, opts.string) end
  if kind == "number" then return number(v) end
  if kind == "table" or kind == "userdata" then
    if has_tostring(v) then
      local ok, s = pcall(tostring, v)
      if ok and type(s) == "string" then return s end
    end
  end
  return tostring(v)
end

local TYPE_ORDER = {number = 1, string = 2, boolean = 3}

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (TYPE_ORDER[ta] or 4) < (TYPE_ORDER[tb] or 4) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

--- The sequence length and the other keys, sorted.
local function keys_of(t)
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  local others = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then others[#others + 1] = k end
  end
  table.sort(others, key_less)
  return n, others
end

local function key_text(k, opts)
  if is_identifier(k) then return k end
  return "[" .. scalar(k, opts) .. "]"
end

local render -- forward

-- The fields of t as strings ("value" or "key = value"), elided past the
-- item limit or the budget; `packable[i]` when field i is a sequence item
-- on one line, which the multi-line layout may put several to a line.
local function fields(t, opts, state, level, indent)
  local n, others = keys_of(t)
  local total = n + #others
  local out, packable = {}, {}
  for i = 1, total do
    if i > opts.items or state.budget <= 0 then
      out[#out + 1] = ("... (%d more)"):format(total - i + 1)
      break
    end
    state.budget = state.budget - 1
    if i <= n then
      local text = render(rawget(t, i), opts, state, level + 1, indent)
      out[#out + 1], packable[i] = text, not text:find("\n", 1, true)
    else
      local k = others[i - n]
      out[#out + 1] = key_text(k, opts) .. " = " .. render(rawget(t, k), opts, state, level + 1, indent)
    end
  end
  return out, packable
end

-- One field a line, but runs of short sequence items filled up to the width.
local function multiline(parts, packable, indent, width)
  local lines, current = {}, nil
  for i, part in ipairs(parts) do
    if packable[i] and current and #indent + #current + #part + 2 <= width then
      current = current .. ", " .. part
    else
      if current then lines[#lines + 1] = current end
      current = part
    end
    if not packable[i] then lines[#lines + 1] = current; current = nil end
  end
  if current then lines[#lines + 1] = current end
  return table.concat(lines, ",\n" .. indent)
end

local function render_table(t, opts, state, level, indent)
  if state.open[t] then return "<cycle>" end
  if next(t) == nil then return "{}" end
  if level > opts.depth then return "{...}" end
  state.open[t] = true
  local inner = indent .. "  "
  local parts, packable = fields(t, opts, state, level, inner)
  state.open[t] = nil
  local line = "{" .. table.concat(parts, ", ") .. "}"
  if #indent + #line <= opts.width and not line:find("\n", 1, true) then return line end
  return "{\n" .. inner .. multiline(parts, packable, inner, opts.width) .. "\n" .. indent .. "}"
end

function render(v, opts, state, level, indent)
  if type(v) == "table" and not has_tostring(v) then
    return render_table(v, opts, state, level, indent)
  end
  return scalar(v, opts)
end

--- The text of v. opts may change the limits: depth, items, string (bytes),
-- width (columns), budget (fields in all).
function M.format(v, opts)
  local o = {}
  for k, default in pairs(DEFAULTS) do o[k] = opts and opts[k] or default end
  return render(v, o, {open = {}, budget = o.budget}, 1, "")
end

return M
