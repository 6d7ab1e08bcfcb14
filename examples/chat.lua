-- chat: a WebSocket chat room served by two worker processes.
--
--   pulsar-lua examples/chat.lua [PORT]      (default 8090; 0: any free port)
--   then open http://127.0.0.1:PORT/?name=ann in two browsers
--
-- The HttpServer answers `/` with the page below and upgrades `/chat` to a
-- WebSocket. Each worker process keeps the WebSockets it accepted; none can
-- write to another's. So a message goes through actors: the worker that
-- received it casts it to the room, a thread actor in the arbiter's process
-- that every worker joined when it started, and the room casts it to each
-- worker, which sends it to its own clients. Two browsers that landed on
-- two different workers thus see each other. Each message the page gets is
-- JSON: {kind = "welcome" | "message" | "notice", name=, text=, pid=}, pid
-- being the worker that received it (the welcome's: the client's own).
local port = tonumber(arg[1] or 8090)
if not port then error("chat: the port must be a number, not '" .. arg[1] .. "'", 0) end

local ROOM = "chat-room"
local MAX_TEXT = 2000 -- characters of one message; longer ones are cut

local PAGE = [[<!doctype html>
<html><head><meta charset="utf-8"><title>pulsar-lua chat</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40em; margin: 2em auto; color: #222; }
  #status { color: #777; font-size: 0.9em; }
  #messages { list-style: none; padding: 0.5em; height: 20em; overflow-y: auto;
              border: 1px solid #ccc; border-radius: 4px; }
  #messages li { padding: 0.2em 0; }
  #messages li.notice { color: #888; font-style: italic; }
  #messages .name { font-weight: bold; margin-right: 0.5em; }
  #messages .pid { color: #aaa; font-size: 0.8em; margin-left: 0.5em; }
  form { display: flex; gap: 0.5em; }
  #text { flex: 1; padding: 0.4em; font: inherit; }
</style></head>
<body>
<h1>pulsar-lua chat</h1>
<p id="status">connecting...</p>
<ul id="messages"></ul>
<form id="form"><input id="text" autocomplete="off" placeholder="say something" autofocus>
<button id="send" disabled>Send</button></form>
<script>
const name = new URLSearchParams(location.search).get("name") || "you";
const status = document.getElementById("status");
const list = document.getElementById("messages");
const text = document.getElementById("text");
const send = document.getElementById("send");
const ws = new WebSocket(`ws://${location.host}/chat?name=${encodeURIComponent(name)}`);

function show(m) {
  const li = document.createElement("li");
  li.dataset.pid = m.pid;
  if (m.kind === "notice") {
    li.className = "notice";
    li.textContent = m.text;
  } else {
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = m.name;
    const pid = document.createElement("span");
    pid.className = "pid";
    pid.textContent = "via pid " + m.pid;
    li.append(who, m.text, pid);
  }
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

ws.onmessage = (event) => {
  const m = JSON.parse(event.data);
  if (m.kind === "welcome") {
    document.body.dataset.pid = m.pid;
    status.textContent = `${name}, you are connected to ${m.worker} (pid ${m.pid})`;
    send.disabled = false;
  } else {
    show(m);
  }
};
ws.onclose = () => { status.textContent = "disconnected"; send.disabled = true; };
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  if (text.value) ws.send(text.value);
  text.value = "";
  text.focus();
};
</script>
</body></html>
]]

-- One WebSocket, in the worker that accepted it: a welcome saying which
-- worker it is, then each message read goes to the room.
local function chat(ws)
  local json, core = require "pulsar.json", require "pulsar.core"
  local worker = pulsar.get_actor()
  local name = tostring(ws.request.query.name or "anonymous"):sub(1, 40)
  local pid = core.pid()
  worker.chat_clients[ws] = {}
  ws:send(json.encode{kind = "welcome", name = name, pid = pid, worker = worker.unique_name})
  pulsar.cast(ROOM, "say", json.encode{kind = "notice", text = name .. " joined", pid = pid})
  while true do
    local text = ws:receive():wait()
    if text == nil then break end
    if ws.last_kind == "text" and text ~= "" then
      pulsar.cast(ROOM, "say", json.encode{kind = "message", name = name,
                                           text = text:sub(1, MAX_TEXT), pid = pid})
    end
  end
  worker.chat_clients[ws] = nil
  pulsar.cast(ROOM, "say", json.encode{kind = "notice", text = name .. " left", pid = pid})
end

-- The room: the aids of the workers that joined; each line said is cast
-- to all of them, in the order the room got them.
pulsar.spawn{
  name = ROOM, unique_name = ROOM, concurrency = "thread",
  start = function(room) room.members = {} end,
  commands = {
    join = function(request, aid) request.actor.members[aid] = true end,
    leave = function(request, aid) request.actor.members[aid] = nil end,
    say = function(request, line)
      local members = request.actor.members
      for aid in pairs(members) do
        if not pulsar.cast(aid, "chat:deliver", line) then members[aid] = nil end
      end
    end,
  },
}:wait()

local app = pulsar.apps.HttpServer{
  name = "chat",
  bind = "127.0.0.1:" .. port,
  workers = 2,
  concurrency = "process",
  worker_start = function(worker)
    worker.chat_clients = {}
    -- A client that has not read the last line it was sent misses this
    -- one: a slow reader costs messages, not the worker's memory.
    pulsar.command("chat:deliver", function(request, line)
      for ws, client in pairs(request.actor.chat_clients) do
        if not ws.closed:done() and (not client.sending or client.sending:done()) then
          client.sending = ws:send(line)
        end
      end
    end, {ack = false})
    pulsar.cast(ROOM, "join", worker.aid)
  end,
  worker_stopping = function(worker) pulsar.cast(ROOM, "leave", worker.aid) end,
  handler = function(request)
    if request.path == "/" then
      return 200, {["Content-Type"] = "text/html; charset=utf-8"}, PAGE
    elseif request.path == "/chat" then
      return require("pulsar.websocket").upgrade(request, chat)
    end
    return 404, {["Content-Type"] = "text/plain"}, "no such page: " .. request.path
  end,
}
app:start():wait()
print(("chat: open http://%s/?name=you (2 workers; Ctrl-C stops)"):format(app.address))
io.stdout:flush()
