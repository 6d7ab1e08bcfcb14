#!/usr/bin/python3
"""ws_client.py: a WebSocket client nobody here wrote, for the specs.

tests/spec/websocket_spec.lua runs it against pulsar's HttpServer to check
the server with Debian's python3-websockets (10.x: the asyncio API), which
offers permessage-deflate unless told not to. It prints one line per thing
it saw, for the spec to match, and the close it got, as "closed CODE REASON".

    ws_client.py MODE URL [--no-deflate] [--protocol P]... [--size N]

MODE:
  echo         the server's greeting, then text, binary, a fragmented
               message, a large compressible one and a ping; closes with
               4000 "bye"
  closeme      asks the server to close ("close-me") and waits for it
  big          sends --size bytes of text: prints the reply's size and
               closes, or the server's close
  subprotocol  prints the subprotocol agreed
  wait         prints "open", then waits for the server to close

Run it with /usr/bin/python3: the package is Debian's.
"""
import argparse
import asyncio
import sys

import websockets


def say(*parts):
    print(*parts, flush=True)


def closed(ws):
    say("closed", ws.close_code, ws.close_reason)


async def drain(ws):
    """Reads until the connection is closed (by the server)."""
    try:
        while True:
            await ws.recv()
    except websockets.ConnectionClosed:
        pass


async def echo(ws, args):
    say("text", await ws.recv())
    await ws.send("héllo wörld")
    say("text", await ws.recv())
    await ws.send(b"\x00\x01\xff")
    say("binary", (await ws.recv()).hex())
    await ws.send(["frag", "ment", "ed"])
    say("text", await ws.recv())
    big = "a" * 200000
    await ws.send(big)
    say("big", "ok" if await ws.recv() == big else "wrong")
    pong = await ws.ping(b"are you there")
    await asyncio.wait_for(pong, 10)
    say("pong")
    await ws.close(4000, "bye")
    closed(ws)


async def closeme(ws, args):
    say("text", await ws.recv())
    await ws.send("close-me")
    await drain(ws)
    closed(ws)


async def big(ws, args):
    say("text", await ws.recv())
    await ws.send("x" * args.size)
    try:
        say("reply", len(await ws.recv()))
        await ws.close()
    except websockets.ConnectionClosed:
        pass
    closed(ws)


async def subprotocol(ws, args):
    say("subprotocol", ws.subprotocol)
    await ws.close()


async def wait(ws, args):
    say("text", await ws.recv())
    say("open")
    await drain(ws)
    closed(ws)


MODES = {"echo": echo, "closeme": closeme, "big": big,
         "subprotocol": subprotocol, "wait": wait}


async def main(args):
    async with websockets.connect(
            args.url, compression=None if args.no_deflate else "deflate",
            subprotocols=args.protocol or None, max_size=None,
            open_timeout=20, close_timeout=20) as ws:
        names = [e.name for e in ws.extensions] or ["none"]
        say("extensions", ",".join(names))
        await MODES[args.mode](ws, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("url")
    parser.add_argument("--no-deflate", action="store_true")
    parser.add_argument("--protocol", action="append")
    parser.add_argument("--size", type=int, default=0)
    try:
        asyncio.run(main(parser.parse_args()))
    except Exception as e:  # the spec reads what went wrong
        say("error", type(e).__name__, e)
        sys.exit(1)
