#!/usr/bin/python3
"""observer_feed.py: reads the observer's live feed as a script would, for
tests/spec/observer_spec.lua, with Debian's python3-websockets.

    observer_feed.py URL [--origin ORIGIN] [--messages N] [--timeout S]

It connects to URL (ws://HOST:PORT/ws?token=...), sending ORIGIN as the
Origin header if given, reads N messages (3) and prints one JSON line per
message: {"type":, "actors": [[name, kind, pid], ...], "point":, "logs": n,
"history": n}. A refused handshake prints {"refused": STATUS} and exits 0:
the spec decides whether a refusal was right. Run it with /usr/bin/python3.
"""
import argparse
import asyncio
import json
import sys

import websockets


def summary(message):
    snapshot = message.get("snapshot") or {}
    actors = snapshot.get("actors") or []
    return {"type": message.get("type"),
            "actors": [[a.get("name"), a.get("kind"), a.get("pid")] for a in actors],
            "point": message.get("point"),
            "logs": len(message.get("logs") or []),
            "history": len(message.get("history") or [])}


async def read(args):
    try:
        async with websockets.connect(args.url, origin=args.origin, max_size=None,
                                      open_timeout=args.timeout) as ws:
            for _ in range(args.messages):
                text = await asyncio.wait_for(ws.recv(), args.timeout)
                print(json.dumps(summary(json.loads(text))), flush=True)
    except websockets.exceptions.InvalidStatusCode as e:
        print(json.dumps({"refused": e.status_code}), flush=True)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("--origin")
    p.add_argument("--messages", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    asyncio.run(read(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
