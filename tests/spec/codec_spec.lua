-- The wire as Lua sees it (docs/API.md §3): values through MessagePack and back,
-- functions crossing by value, and RFC 6455 frames. The C unit tests
-- (tests/c) cover the same codecs byte by byte and across two VMs.
local core = require "pulsar.core"

local function roundtrip(v) return core.decode(core.encode(v)) end

describe("value codec", function()
  it("round-trips every plain Lua type", function()
    local values = {
      true, false, 0, 1, -1, 127, 128, -33, 255, 65536, math.maxinteger, math.mininteger,
      0.5, -2.25, 1e300, math.huge, -math.huge, "", "text", "bin\0ary\255",
      string.rep("x", 70000), {}, {1, 2, 3}, {a = 1, b = {c = {"deep"}}},
      {[1] = "a", [3] = "c"}, {[1.5] = "float key", [true] = "bool key"},
    }
    for _, v in ipairs(values) do assert.are.same(v, roundtrip(v)) end
    assert.is_nil(roundtrip(nil))
    local nan = roundtrip(0 / 0)
    assert.is_true(nan ~= nan)
  end)

  it("keeps integers and floats apart", function()
    assert.are.equal("float", math.type(roundtrip(1.0)))
    assert.are.equal("integer", math.type(roundtrip(1)))
  end)

  it("encodes a sequence as an array and other tables as maps", function()
    assert.are.equal("\x93\x01\x02\x03", core.encode({1, 2, 3}))
    assert.are.equal("\x81\xa1a\x01", core.encode({a = 1}))
    assert.are.equal("\x90", core.encode({}))
  end)

  it("carries functions by value with their upvalues", function()
    local base, string_mod = 10, string
    local function add(x) return x + base end
    assert.are.equal(15, roundtrip(add)(5))
    local fmt = function(n) return string_mod.format("%03d", n) end
    assert.are.equal("007", roundtrip(fmt)(7))
    local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
    assert.are.equal(55, roundtrip(fib)(10))
    assert.are.equal(print, roundtrip(print))
    assert.are.equal(string.format, roundtrip(string.format))
    -- busted gives spec files an environment of their own; the copy's _ENV
    -- is this VM's real globals.
    local uses_global = function() return PULSAR_CODEC_SPEC_GLOBAL end
    _G.PULSAR_CODEC_SPEC_GLOBAL = "seen through _ENV"
    assert.are.equal("seen through _ENV", roundtrip(uses_global)())
    _G.PULSAR_CODEC_SPEC_GLOBAL = nil
  end)

  it("copies upvalues: the copy does not share state with the original", function()
    local n = 0
    local function inc() n = n + 1 return n end
    local copy = roundtrip(inc)
    assert.are.equal(1, copy())
    assert.are.equal(0, n)
  end)

  it("refuses what cannot cross and names it", function()
    local co = coroutine.create(print)
    assert.has_error(function() core.encode({list = {1, co}}) end, "value.list[2]: cannot encode a thread")
    local ud = io.stdout
    assert.error_matches(function() core.encode({file = ud}) end, "value%.file: cannot encode a userdata")
    local function uses_co() return co end
    assert.error_matches(function() core.encode({f = uses_co}) end, "value%.f upvalue 'co': cannot encode a thread")
    local cycle = {}
    cycle.self = cycle
    assert.error_matches(function() core.encode(cycle) end, "value%.self: cycle")
  end)

  it("limits depth", function()
    local deep = {}
    local t = deep
    for _ = 1, 99 do t[1] = {}; t = t[1] end
    assert.are.same(deep, roundtrip(deep))
    t[1] = {}
    assert.error_matches(function() core.encode(deep) end, "nested deeper than 100 levels")
  end)

  it("refuses functions when asked to (untrusted input)", function()
    local bytes = core.encode(function() end)
    assert.error_matches(function() core.decode(bytes, false) end, "functions are not accepted")
  end)

  it("rejects malformed input with a clear error", function()
    assert.error_matches(function() core.decode("\xdd\x0f\xff\xff\xff") end, "exceeds the input")
    assert.error_matches(function() core.decode("\xc1") end, "invalid byte 0xc1")
    assert.error_matches(function() core.decode("\xcd\x01") end, "truncated")
    assert.error_matches(function() core.decode("\x92\x01") end, "array of 2 items at byte 0 exceeds the input")
    assert.error_matches(function() core.decode("\x01\x02") end, "1 bytes left after the value")
    assert.error_matches(function() core.decode("\x81\xc0\x01") end, "nil")
  end)
end)

describe("envelope heads", function()
  it("reads the routing fields without decoding the arguments", function()
    local payload = core.encode {command = "echo", id = 7, sender = "a1", target = "b2",
                                 args = {{deep = {1, 2, 3}}, string.rep("x", 1000)}, ack = true}
    assert.are.same({"echo", "b2", "a1", 7, true}, {core.peek_envelope(payload)})
    local reply = core.encode {command = "callback", ack = 7, target = "a1", sender = "b2", result = {1}}
    assert.are.same({"callback", "a1", "b2", nil, 7}, {core.peek_envelope(reply)})
  end)

  it("says nil for what is not one well-formed map", function()
    for _, bad in ipairs {"", "\x93\x01\x02\x03", "\x81\xa1a", "\x81\xa1a\x01\x00", "\xdf\xff\xff\xff\xff"} do
      assert.is_nil(core.peek_envelope(bad))
    end
  end)
end)

describe("frame codec", function()
  it("round-trips payloads of every header size", function()
    for _, n in ipairs {0, 1, 125, 126, 65535, 65536, 200000} do
      local payload = string.rep("p", n)
      local frame = core.encode_frame(payload)
      local op, got, used = core.decode_frame(frame)
      assert.are.same({2, n, #frame}, {op, #got, used})
      assert.are.equal(payload, got)
    end
  end)

  it("says incomplete until the whole frame is there, then its size", function()
    local frame = core.encode_frame(string.rep("z", 300))
    assert.are.same({nil, "incomplete", nil}, {core.decode_frame(frame:sub(1, 1))})
    assert.are.same({nil, "incomplete", #frame}, {core.decode_frame(frame:sub(1, 10))})
    assert.are.equal(2, (core.decode_frame(frame)))
  end)

  it("rejects an oversized frame from its header alone", function()
    local header = core.encode_frame(string.rep("x", 2000)):sub(1, 4)
    assert.error_matches(function() core.decode_frame(header, 1000) end, "exceeds the limit of 1000 bytes")
  end)

  it("understands control frames and rejects fragments", function()
    local op, payload = core.decode_frame(core.encode_frame("hi", 9))
    assert.are.same({9, "hi"}, {op, payload})
    op, payload = core.decode_frame(core.encode_frame("\3\232", 8))
    assert.are.same({8, "\3\232"}, {op, payload})
    assert.error_matches(function() core.decode_frame("\x02\x00") end, "fragmented")
    assert.error_matches(function() core.decode_frame("\xc2\x00") end, "reserved")
  end)
end)

-- Envelopes (codec/envelope.c): the mailbox writes and reads them without a
-- Lua table of the envelope, in the same wire form as the table would have.
describe("envelope codec", function()
  local function values(...) return {n = select("#", ...), ...} end

  it("writes a request as the table form would encode it", function()
    local payload = core.encode_request("echo", 7, "me", "you", true, 1, "two", {3})
    assert.are.same({command = "echo", id = 7, sender = "me", target = "you", ack = true,
                     args = {1, "two", {3}}}, core.decode(payload))
    assert.are.same({command = "ping", id = 8, sender = "me", target = "you", ack = false},
                    core.decode(core.encode_request("ping", 8, "me", "you", false)))
  end)

  it("keeps nils among the arguments in place, and counts them", function()
    local payload = core.encode_request("run", 9, "me", "you", true, nil, 2, nil)
    assert.are.same({[2] = 2, n = 3}, core.decode(payload).args)
    assert.are.same(values("run", 9, "me", "you", true, nil, 2, nil), values(core.decode_envelope(payload)))
  end)

  it("reads a request straight into its command's arguments", function()
    local payload = core.encode{command = "echo", id = 1, sender = "s", target = "t", ack = true,
                                args = {"a", {b = 1}}}
    assert.are.same(values("echo", 1, "s", "t", true, "a", {b = 1}), values(core.decode_envelope(payload)))
    assert.are.same(values("stop", nil, nil, nil, false),
                    values(core.decode_envelope(core.encode{command = "stop"})))
  end)

  it("writes and reads replies, a nil result as no field", function()
    assert.are.same({command = "callback", ack = 7, target = "me", sender = "you", result = {x = 1}},
                    core.decode(core.encode_reply(7, "me", "you", false, {x = 1})))
    assert.are.same({command = "callback", ack = 8, target = "me", sender = "you"},
                    core.decode(core.encode_reply(8, "me", "you", false, nil)))
    assert.are.same(values("callback", 9, "you", "me", true, "boom"),
                    values(core.decode_envelope(core.encode_reply(9, "me", "you", true, "boom"))))
    assert.are.same(values("callback", 10, "you", "me", false, nil),
                    values(core.decode_envelope(core.encode_reply(10, "me", "you", false, nil))))
  end)

  it("names an argument or a result that cannot cross by its path", function()
    local co = coroutine.create(function() end)
    local ok, err = pcall(core.encode_request, "echo", 1, "me", "you", true, 1, {inner = co})
    assert.is_false(ok)
    assert.matches("args%[2%]%.inner: cannot encode a thread", err)
    ok, err = pcall(core.encode_reply, 1, "me", "you", false, {co})
    assert.is_false(ok)
    assert.matches("result%[1%]: cannot encode a thread", err)
  end)

  it("refuses what is not an envelope, naming why", function()
    for _, bad in ipairs {core.encode(42), core.encode{id = 1}, core.encode{command = 1},
                          "\x81", core.encode{command = "x", args = 5}} do
      local ok, err = pcall(core.decode_envelope, bad)
      assert.is_false(ok)
      assert.matches("cannot decode: ", err)
    end
  end)
end)
