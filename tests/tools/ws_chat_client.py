#!/usr/bin/python3
"""ws_chat_client.py: a second client of examples/chat.lua for specs, on
Debian's python3-websockets (run it with /usr/bin/python3).

    /usr/bin/python3 tests/tools/ws_chat_client.py WS_URL [--connections N]
        [--expect TEXT] [--say TEXT] [--timeout S]

It opens up to N connections (8), stopping once they are on two workers (the
welcome of each names its worker's pid), and prints {"ready": true, "pids":
[...]}. With --expect it waits for a message of that text and prints
{"received": MESSAGE, "on_pids": [...]}, the pids of the connections it
reached. With --say it sends TEXT from a connection on another worker than
the expected message came through (if it has one), waits until every
connection has it back, and prints {"said": TEXT, "from_pid": P, "on_pids":
[...]}. So a spec sees which workers a message crossed. Exit status: 0 done,
1 a wait passed --timeout seconds (20) or the server misbehaved (why on
stderr).
"""
import argparse
import asyncio
import json
import sys

import websockets


class Connection:
    def __init__(self, ws, welcome):
        self.ws, self.pid = ws, welcome["pid"]
        self.messages = asyncio.Queue()

    async def read(self):
        try:
            async for raw in self.ws:
                m = json.loads(raw)
                if m.get("kind") == "message":
                    await self.messages.put(m)
        finally:
            await self.messages.put(None)  # what waits learns it at once

    async def wait_text(self, text):
        while True:
            m = await self.messages.get()
            if m is None:
                raise RuntimeError(f"the server closed the connection on pid {self.pid}"
                                   f" before {text!r} came")
            if m["text"] == text:
                return m


async def open_connections(url, n):
    conns = []
    while len(conns) < n and len({c.pid for c in conns}) < 2:
        ws = await websockets.connect(url, ping_interval=None)
        welcome = json.loads(await ws.recv())
        if welcome.get("kind") != "welcome":
            raise RuntimeError(f"the first message was not a welcome: {welcome}")
        c = Connection(ws, welcome)
        asyncio.ensure_future(c.read())
        conns.append(c)
    return conns


def say(**fields):
    print(json.dumps(fields), flush=True)


async def run(args):
    conns = await open_connections(args.url, args.connections)
    say(ready=True, pids=sorted({c.pid for c in conns}))
    origin = None
    if args.expect is not None:
        got = await asyncio.gather(*(c.wait_text(args.expect) for c in conns))
        origin = got[0]["pid"]
        say(received=got[0], on_pids=sorted({c.pid for c in conns}))
    if args.say is not None:
        sender = next((c for c in conns if c.pid != origin), conns[0])
        await sender.ws.send(args.say)
        await asyncio.gather(*(c.wait_text(args.say) for c in conns))
        say(said=args.say, from_pid=sender.pid, on_pids=sorted({c.pid for c in conns}))
    for c in conns:
        await c.ws.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--expect")
    p.add_argument("--say")
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        print(f"ws_chat_client.py: timed out after {args.timeout:g} s", file=sys.stderr)
        return 1
    except (OSError, RuntimeError, websockets.WebSocketException) as e:
        print(f"ws_chat_client.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
