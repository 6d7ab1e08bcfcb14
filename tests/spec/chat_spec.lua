-- examples/chat.lua as its users meet it: headless Chromium opens the page
-- (tests/tools/browser.py) and talks with a second client on Debian's
-- python3-websockets (tests/tools/ws_chat_client.py), each seeing the
-- other's messages. Every message carries the pid of the worker that
-- received it and every welcome the pid of the client's own worker, so the
-- spec checks that messages crossed from one worker process to the other
-- rather than trusting that they might have. Without Chromium (it cannot
-- start) the browser's case is pending with the reason browser.py printed.
local support = require "support"

local WAIT = 30 -- seconds; generous, for slow machines and sanitizers
local PYTHON = support.PYTHON
local quote = support.quote

-- The example on a port the system picks; support.start_server's handle
-- (url, pid, stop()) and ws_url.
local function start_chat()
  local h = support.start_server("examples/chat.lua 0",
                                 {ready = "chat: open http://(127%.0%.0%.1:%d+)/%?name=you"})
  h.ws_url = "ws://" .. h.address .. "/chat"
  return h
end

local json_lines = support.json_lines

-- ws_chat_client.py in the background, with its arguments.
local function python_client(url, args)
  return support.start(quote(url) .. " " .. args, nil,
                       PYTHON .. " tests/tools/ws_chat_client.py")
end

local browser = support.browser

-- JS: the chat messages of the page's list.
local LIST = [[[...document.querySelectorAll("#messages li:not(.notice)")].map(
  li => ({pid: Number(li.dataset.pid), text: li.textContent}))]]

local function shows(text)
  return ([[[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes(%q))]])
    :format(text)
end

describe("examples/chat.lua", function()
  local chat
  setup(function() chat = start_chat() end)
  teardown(function()
    if not chat then return end
    assert.are.equal(15, chat.stop()) -- SIGTERM's number, after a graceful stop
    assert.not_matches("ERROR", chat.err())
  end)

  it("serves its page at / with the message list, the input and the send button", function()
    local r = support.curl(quote(chat.url .. "/?name=ann"))
    assert.are.equal(0, r.code, r.err)
    for _, id in ipairs {'id="messages"', 'id="text"', 'id="send"', "new WebSocket"} do
      assert.matches(id, r.out, 1, true)
    end
  end)

  it("relays a message from a connection on one worker to those on the other", function()
    local client = python_client(chat.ws_url .. "?name=py", "--connections 16 --say 'hello both'")
    assert.are.equal(0, client.wait(WAIT + 5), client.err())
    local lines = json_lines(client.out())
    assert.are.equal(2, #lines[1].pids, "all connections landed on one worker: " .. client.out())
    assert.are.same({said = "hello both", from_pid = lines[2].from_pid, on_pids = lines[1].pids}, lines[2])
  end)

  it("lets a browser and a python client on two workers see each other's messages", function()
    local client = python_client(chat.ws_url .. "?name=py",
      "--connections 16 --expect 'hello from ann' --say 'hello from py' --timeout " .. WAIT)
    support.wait_for(function() return client.out():match('"ready"') or support.read_file(client.statusfile) end, WAIT)
    assert(client.out():find('"ready"', 1, true), 'the python client did not connect: ' .. client.err())
    local r = browser(table.concat({
      "--url", quote(chat.url .. "/?name=ann"),
      "--wait-for", quote("document.body.dataset.pid"),
      "--type", "'#text'", quote("hello from ann"),
      "--click", "'#send'",
      "--wait-for", quote(shows("hello from py")),
      "--eval", quote("Number(document.body.dataset.pid)"),
      "--eval", quote(LIST),
      "--screenshot", "build/chat.png",
    }, " "))
    if r.code == 2 then
      pending("skipped: " .. r.err:gsub("\n$", ""))
      return
    end
    assert.are.equal(0, r.code, r.err)
    local browser_pid, list = table.unpack(json_lines(r.out))
    assert.are.equal(0, client.wait(WAIT), client.err())
    local ready, received, said = table.unpack(json_lines(client.out()))
    assert.are.equal(2, #ready.pids, "all connections landed on one worker: " .. client.out())
    -- ann's line came in through the browser's worker and reached both...
    assert.are.same({kind = "message", name = "ann", text = "hello from ann", pid = browser_pid},
                    received.received)
    assert.are.same(ready.pids, received.on_pids)
    -- ...and py's, sent from the other worker, reached the browser.
    assert.are_not.equal(browser_pid, said.from_pid)
    assert.are.same(ready.pids, said.on_pids)
    assert.are.same({{pid = browser_pid, text = ("annhello from annvia pid %d"):format(browser_pid)},
                     {pid = said.from_pid, text = ("pyhello from pyvia pid %d"):format(said.from_pid)}},
                    list)
    assert.are.equal("\137PNG", support.read_file("build/chat.png"):sub(1, 4))
  end)
end)
