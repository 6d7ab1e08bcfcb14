-- api: a small JSON API with a router, and its web page as static files.
--
--   pulsar-lua examples/api.lua [ADDRESS]
--   curl http://127.0.0.1:8071/api/notes
--   curl -d '{"text": "buy milk"}' http://127.0.0.1:8071/api/notes
--   curl http://127.0.0.1:8071/api/notes/1
--   curl -X DELETE http://127.0.0.1:8071/api/notes/1
--   and http://127.0.0.1:8071/ in a browser (examples/api/index.html)
--
-- The address is the first argument, else --bind, else 127.0.0.1:8071.
-- Handlers return tables: the router sends them as JSON. request:json()
-- decodes a body, and answers 400 naming the position when it is not JSON.
-- The notes live in the worker's memory, so there is one worker: with two,
-- each would keep notes of its own (a database, or an actor holding them,
-- is the way to share them).
local bind = arg[1] or pulsar.cfg.bind or "127.0.0.1:8071"
local here = (arg[0] or ""):match("^(.*)/[^/]*$") or "."

-- The routes cross into the worker by value, each with its own copy of its
-- upvalues; what they share is found there by name: a global of the
-- worker's VM (a function's _ENV becomes the globals of the VM it lands in).
local function store()
  NOTES = NOTES or {by_id = {}, next_id = 1}
  return NOTES
end

local function note_of(request)
  local note = store().by_id[tonumber(request.params.id)]
  if not note then pulsar.http.error(404, "no note " .. request.params.id) end
  return note
end

local router = pulsar.http.Router()

-- Middleware: every answer is logged, and the API's are never cached.
router:use(function(request, next)
  local status, headers, body = next(request)
  if request.path:find("^/api/") then
    headers = headers or {}
    headers["Cache-Control"] = "no-store"
  end
  pulsar.log.info("%s %s -> %d", request.method, request.path, status)
  return status, headers, body
end)

router:get("/api/notes", function()
  local s, list = store(), {}
  for id = 1, s.next_id - 1 do list[#list + 1] = s.by_id[id] end
  return {notes = list, count = #list} -- an empty list is {} in JSON (pulsar.json)
end)

router:post("/api/notes", function(request)
  local body = request:json()
  if type(body) ~= "table" or type(body.text) ~= "string" or body.text == "" then
    pulsar.http.error(422, 'a note is {"text": "..."}')
  end
  local s = store()
  local note = {id = s.next_id, text = body.text}
  s.by_id[note.id], s.next_id = note, s.next_id + 1
  return 201, {Location = "/api/notes/" .. note.id}, note
end)

router:get("/api/notes/:id", note_of)

router:delete("/api/notes/:id", function(request)
  store().by_id[note_of(request).id] = nil
  return 204
end)

-- Everything else: the page and its style, from examples/api/.
router:static("/", here .. "/api", {index = "index.html", max_age = 60})

local app = pulsar.apps.HttpServer{name = "api", bind = bind, workers = 1, handler = router}
app:start():wait()
print(("serving the notes API on http://%s/ (Ctrl-C stops)"):format(app.address))
io.stdout:flush()
