-- The WebSocket codec as Lua sees it (core.ws_codec, core.ws_accept,
-- core.ws_key; host/bind/lws.c): a server codec and a client codec talking to
-- each other through feed and encode, with and without permessage-deflate,
-- split anywhere, and each close code a peer's bad bytes earn. The C unit
-- tests (tests/c/test_ws.c) cover the frames byte by byte and at every
-- split, the fuzz target with garbage; the real clients (python3-websockets,
-- Chromium) are the WebSocket server's specs.
local core = require "pulsar.core"

-- Feeds stream in pieces of `size` bytes; gives the {kind, payload} pairs,
-- then nil, code, reason if the codec failed.
local function decode(codec, stream, size)
  local got, out = {}, {}
  size = size or #stream
  for i = 1, math.max(#stream, 1), size do
    local n, code, reason = codec:feed(stream:sub(i, i + size - 1), out)
    if not n then return got, code, reason end
    for k = 1, n do got[#got + 1] = {out[2 * k - 1], out[2 * k]} end
  end
  return got
end

-- A client's masked frame, built by hand (key 37 fa 21 3d), so that bad
-- frames can be.
local function frame(first, payload, masked)
  local key = {0x37, 0xfa, 0x21, 0x3d}
  local n = #payload
  local head
  if n < 126 then head = string.char(first, (masked == false and 0 or 0x80) | n)
  else head = string.char(first, (masked == false and 0 or 0x80) | 126) .. string.pack(">I2", n) end
  if masked == false then return head .. payload end
  local bytes = {}
  for i = 1, n do bytes[i] = string.char(payload:byte(i) ~ key[(i - 1) % 4 + 1]) end
  return head .. string.char(table.unpack(key)) .. table.concat(bytes)
end

describe("core.ws_accept and core.ws_key", function()
  it("answer RFC 6455's example key", function()
    assert.are.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", core.ws_accept("dGhlIHNhbXBsZSBub25jZQ=="))
  end)

  it("make fresh keys of 16 random bytes in base64", function()
    local a, b = core.ws_key(), core.ws_key()
    assert.are.equal(24, #a)
    assert.truthy(a:match("^[%w+/]+==$"))
    assert.are_not.equal(a, b)
  end)
end)

describe("core.ws_codec", function()
  for _, deflate in ipairs {false, true} do
    local label = deflate and " with permessage-deflate" or ""
    it("carries every kind from client to server and back" .. label, function()
      local params = deflate and {} or nil
      local client = core.ws_codec {role = "client", deflate = params}
      local server = core.ws_codec {role = "server", deflate = params}
      local big = string.rep("all work and no play ", 5000)
      local stream = client:encode("text", "héllo") .. client:encode("binary", "\0\1\2") ..
                     client:encode("ping", "p") .. client:encode("text", big) ..
                     client:encode("text", "") .. client:encode("close", "done", 1000)
      if deflate then assert.is_true(#stream < #big / 10) end
      for _, size in ipairs {#stream, 1, 7, 1000} do
        local s = core.ws_codec {role = "server", deflate = params}
        assert.are.same({{"text", "héllo"}, {"binary", "\0\1\2"}, {"ping", "p"}, {"text", big},
                         {"text", ""}, {"close", "done"}}, decode(s, stream, size))
        assert.are.equal(1000, s:close_code())
      end
      -- and the server's unmasked frames to the client
      local back = server:encode("text", "to you") .. server:encode("pong", "p") ..
                   server:encode("close")
      assert.are.same({{"text", "to you"}, {"pong", "p"}, {"close", ""}}, decode(client, back, 3))
      assert.is_nil(client:close_code())
    end)
  end

  it("masks what a client sends with a fresh key each frame, never what a server sends", function()
    local client, server = core.ws_codec {role = "client"}, core.ws_codec {role = "server"}
    local a, b = client:encode("text", "same"), client:encode("text", "same")
    assert.are.equal(0x84, a:byte(2))
    assert.are_not.equal(a, b)
    assert.are.equal("\x81\x04same", server:encode("text", "same"))
  end)

  it("keeps the deflate window between messages unless told not to", function()
    local msg = string.rep("a sentence that repeats. ", 4)
    local sizes = {}
    for _, takeover in ipairs {true, false} do
      local params = {client_no_context_takeover = not takeover, client_max_window_bits = 10}
      local client = core.ws_codec {role = "client", deflate = params}
      local server = core.ws_codec {role = "server", deflate = params}
      local first, second = client:encode("text", msg), client:encode("text", msg)
      sizes[takeover] = #second
      assert.are.same({{"text", msg}, {"text", msg}}, decode(server, first .. second, 5))
    end
    assert.is_true(sizes[true] < sizes[false])
  end)

  it("holds only the incomplete frame, and says how much", function()
    local server = core.ws_codec {role = "server"}
    local f = frame(0x81, "0123456789")
    local out = {}
    assert.are.equal(0, server:feed(f:sub(1, 9), out))
    assert.are.equal(9 - 6, server:buffered())
    assert.are.equal(1, server:feed(f:sub(10), out))
    assert.are.equal(0, server:buffered())
    assert.are.same({"text", "0123456789"}, out)
  end)

  it("leaves the caller's entries past the new messages alone", function()
    local server = core.ws_codec {role = "server"}
    local out = {"old", "old", "keep", "keep"}
    assert.are.equal(1, server:feed(frame(0x81, "new"), out))
    assert.are.same({"text", "new", "keep", "keep"}, out)
  end)

  local bad = {
    {"an unmasked client frame", 1002, frame(0x81, "hi", false)},
    {"a reserved bit", 1002, frame(0xA1, "hi")},
    {"RSV1 without deflate", 1002, frame(0xC1, "hi")},
    {"a reserved opcode", 1002, frame(0x83, "hi")},
    {"a continuation without a start", 1002, frame(0x80, "hi")},
    {"a fragmented ping", 1002, frame(0x09, "hi")},
    {"a ping over 125 bytes", 1002, frame(0x89, string.rep("x", 126))},
    {"a one-byte close", 1002, frame(0x88, "\3")},
    {"close code 1005", 1002, frame(0x88, string.pack(">I2", 1005))},
    {"close code 2999", 1002, frame(0x88, string.pack(">I2", 2999))},
    {"a close reason not UTF-8", 1007, frame(0x88, string.pack(">I2", 1000) .. "\xff")},
    {"invalid UTF-8 in a text", 1007, frame(0x81, "ok \xc0\xaf")},
    {"a surrogate", 1007, frame(0x81, "\xed\xa0\x80")},
    {"a text cut inside a character", 1007, frame(0x01, "\xe2\x82") .. frame(0x80, "")},
    {"a message over max_message", 1009, frame(0x82, string.rep("x", 101))},
    {"fragments over max_message", 1009, frame(0x02, string.rep("x", 60)) .. frame(0x80, string.rep("x", 41))},
  }
  for _, case in ipairs(bad) do
    it("closes with " .. case[2] .. " for " .. case[1], function()
      for _, size in ipairs {#case[3], 1} do
        local server = core.ws_codec {role = "server", max_message = 100}
        local _, code, reason = decode(server, case[3], size)
        assert.are.equal(case[2], code)
        assert.is_string(reason)
        -- and every later feed gives the same answer
        local n, again, why = server:feed(frame(0x81, "fine"), {})
        assert.is_nil(n)
        assert.are.same({case[2], reason}, {again, why})
      end
    end)
  end

  it("refuses a too-big message from its header, before its bytes arrive", function()
    local server = core.ws_codec {role = "server", max_message = 1000}
    local header = string.char(0x82, 0xFF) .. string.pack(">I8", 1 << 40) .. "\1\2\3\4"
    local n, code = server:feed(header, {})
    assert.is_nil(n)
    assert.are.equal(1009, code)
  end)

  it("stops a deflate bomb at max_message", function()
    local client = core.ws_codec {role = "client", deflate = {}}
    local bomb = client:encode("binary", string.rep("\0", 8 << 20))
    assert.is_true(#bomb < 16 << 10)
    local server = core.ws_codec {role = "server", deflate = {}, max_message = 1 << 20}
    local _, code, reason = decode(server, bomb, 512)
    assert.are.equal(1009, code)
    assert.matches("max_message", reason)
    assert.is_true(server:buffered() <= 1 << 20)
  end)

  it("fails a text as soon as a bad byte arrives, before the message ends", function()
    local server = core.ws_codec {role = "server"}
    local n, code = server:feed(frame(0x01, "fine so far \xff and more to come"), {})
    assert.is_nil(n)
    assert.are.equal(1007, code)
  end)

  it("raises on a caller's mistakes", function()
    local codec = core.ws_codec {role = "server"}
    assert.has_error(function() codec:encode("ping", string.rep("x", 126)) end,
                     "ws codec: a ping payload may have at most 125 bytes")
    assert.has_error(function() codec:encode("close", string.rep("x", 124), 1000) end)
    assert.has_error(function() codec:encode("close", "", 1005) end)
    assert.has_error(function() codec:encode("shout", "x") end)
    assert.has_error(function() core.ws_codec {role = "peer"} end,
                     'ws_codec: role must be "server" or "client"')
    assert.has_error(function() core.ws_codec {role = "server", max_message = 0} end)
    assert.has_error(function() core.ws_codec {role = "server", deflate = {server_max_window_bits = 7}} end,
                     "ws_codec: deflate.server_max_window_bits must be an integer from 8 to 15")
    assert.are.equal(125 + 2, #codec:encode("ping", string.rep("x", 125)))
  end)
end)
