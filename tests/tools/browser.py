#!/usr/bin/python3
"""browser.py: drives Debian's headless Chromium over the DevTools Protocol,
so that specs (and the observer) can open a page served by pulsar-lua, act
on it as a user would and look at what it shows.

    /usr/bin/python3 tests/tools/browser.py --url URL [--wait-for JS]
        [--type SELECTOR TEXT] [--click SELECTOR] [--eval JS]...
        [--exec COMMAND] [--screenshot PATH] [--timeout S] [--window WxH]

The steps run in the order given; --url, --wait-for, --type, --click, --eval,
--exec and --screenshot may each be repeated. --exec runs a shell command
between two steps, the page staying open (a spec kills a process there and
waits for the page to show it); its failure fails the step. --eval prints the JSON of its value
(promises awaited), one line per --eval; --wait-for polls an expression until
it is true, for at most --timeout seconds (10), which also bounds each other
step. Exit status: 0 all steps done; 1 a step failed or timed out (the reason,
and what the page logged, on stderr); 2 Chromium could not start (the reason
on stderr: a spec skips then); 3 bad usage. CHROMIUM names another binary
than /usr/bin/chromium (CHROMIUM=/bin/false shows a spec's skip).

Written by us on python3-websockets (run it with /usr/bin/python3, which has
it) rather than a browser-automation library: Debian has none, and the
protocol needs only a handful of commands. Chromium runs with a fresh profile
directory and without its background network traffic (refused on closed
machines); it is killed, with its process group, and the profile removed at
exit whatever happened. Importable: `async with Browser(timeout) as b:`
gives navigate, evaluate, wait_for, type, click and screenshot.
"""
import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0"]


class CannotStart(Exception):
    """Chromium did not start or did not offer its DevTools endpoint."""


class StepFailed(Exception):
    """A step failed or timed out; the message says which and why."""


class Browser:
    def __init__(self, timeout=10.0, window="1024,768"):
        self.timeout = timeout
        self.window = window
        self.proc = self.profile = self.ws = self.reader = None
        self.ids = itertools.count(1)
        self.pending = {}      # command id -> Future of its reply
        self.waiters = []      # (event method, Future) waiting for an event
        self.log = []          # what the page printed or threw, for failures

    async def __aenter__(self):
        try:
            await self.start()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc):
        self.close()

    # -- Chromium's process ------------------------------------------------

    async def start(self):
        self.profile = tempfile.mkdtemp(prefix="pulsar-chromium-")
        errors = open(os.path.join(self.profile, "stderr.log"), "wb")
        try:
            self.proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, "--window-size=" + self.window,
                 "--user-data-dir=" + self.profile, "about:blank"],
                stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                start_new_session=True)
        except OSError as e:
            raise CannotStart(f"cannot run {CHROMIUM}: {e}")
        finally:
            errors.close()
        port = await self.devtools_port(max(self.timeout, 20.0))
        url = await self.page_target(port)
        self.ws = await websockets.connect(url, max_size=None, ping_interval=None)
        self.reader = asyncio.ensure_future(self.read_events())
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def devtools_port(self, bound):
        """The port Chromium writes in DevToolsActivePort once it listens."""
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CannotStart(f"chromium exited with status {self.proc.returncode}: "
                                  + self.chromium_errors())
            try:
                with open(path) as f:
                    port = f.readline().strip()
                if port.isdigit():
                    return int(port)
            except FileNotFoundError:
                pass
            await asyncio.sleep(0.05)
        raise CannotStart(f"chromium offered no DevTools port within {bound:g} s: "
                          + self.chromium_errors())

    def chromium_errors(self):
        try:
            with open(os.path.join(self.profile, "stderr.log"), errors="replace") as f:
                lines = [l.strip() for l in f if l.strip()]
        except OSError:
            lines = []
        return " | ".join(lines[-5:]) or "(nothing on its stderr)"

    async def page_target(self, port):
        """The WebSocket URL of the page Chromium opened (asked without a
        proxy: the endpoint is ours), or of a new one if none shows soon."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        base = f"http://127.0.0.1:{port}/json"

        def get(path, method="GET"):
            req = urllib.request.Request(base + path, method=method)
            with opener.open(req, timeout=self.timeout) as r:
                return json.load(r)
        try:
            for _ in range(20):
                pages = [t for t in await asyncio.to_thread(get, "/list") if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
                await asyncio.sleep(0.1)
            return (await asyncio.to_thread(get, "/new?about:blank", "PUT"))["webSocketDebuggerUrl"]
        except (OSError, ValueError, KeyError) as e:
            raise CannotStart(f"chromium's DevTools endpoint on port {port} failed: {e}")

    def close(self):
        if self.reader:
            self.reader.cancel()
        if self.proc and self.proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    pass
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    # -- the protocol --------------------------------------------------------

    async def read_events(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    f = self.pending.pop(msg["id"], None)
                    if f and not f.done():
                        f.set_result(msg)
                    continue
                self.note(msg.get("method"), msg.get("params", {}))
                for method, f in list(self.waiters):
                    if method == msg.get("method") and not f.done():
                        f.set_result(msg.get("params", {}))
        except websockets.ConnectionClosed:
            pass
        for f in self.pending.values():
            if not f.done():
                f.set_exception(StepFailed("chromium closed the DevTools connection"))

    def note(self, method, params):
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.log.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.log.append("exception: " + d.get("exception", {}).get("description", d["text"]))

    async def send(self, method, **params):
        n = next(self.ids)
        f = asyncio.get_running_loop().create_future()
        self.pending[n] = f
        await self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        try:
            msg = await asyncio.wait_for(f, self.timeout)
        except asyncio.TimeoutError:
            raise StepFailed(f"{method}: no answer within {self.timeout:g} s")
        if "error" in msg:
            raise StepFailed(f"{method}: {msg['error'].get('message')}")
        return msg["result"]

    # -- the steps -------------------------------------------------------------

    async def navigate(self, url):
        loaded = asyncio.get_running_loop().create_future()
        self.waiters.append(("Page.loadEventFired", loaded))
        try:
            r = await self.send("Page.navigate", url=url)
            if r.get("errorText"):
                raise StepFailed(f"cannot open {url}: {r['errorText']}")
            await asyncio.wait_for(loaded, self.timeout)
        except asyncio.TimeoutError:
            raise StepFailed(f"{url} did not load within {self.timeout:g} s")
        finally:
            self.waiters.remove(("Page.loadEventFired", loaded))

    async def evaluate(self, expression):
        r = await self.send("Runtime.evaluate", expression=expression,
                            awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            why = d.get("exception", {}).get("description", d.get("text"))
            raise StepFailed(f"{expression} raised: {why}")
        return r["result"].get("value")

    async def wait_for(self, expression, bound=None):
        bound = self.timeout if bound is None else bound
        deadline = time.monotonic() + bound
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out after {bound:g} s waiting for {expression}"
                                 f" (last value: {json.dumps(value)})")
            await asyncio.sleep(0.1)

    async def center_of(self, selector):
        box = await self.evaluate(
            "(() => { const e = document.querySelector(%s); if (!e) return null;"
            " e.scrollIntoView(); e.focus(); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()" % json.dumps(selector))
        if not box:
            raise StepFailed(f"no element matches {selector}")
        return box

    async def click(self, selector):
        """A real mouse click at the element's centre, as a user makes it."""
        x, y = await self.center_of(selector)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y,
                            button="left", clickCount=1)

    async def type(self, selector, text):
        """Focuses the element and types text into it, as a keyboard would."""
        await self.center_of(selector)
        await self.send("Input.insertText", text=text)

    async def screenshot(self, path):
        r = await self.send("Page.captureScreenshot", format="png")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))


class Step(argparse.Action):
    """Keeps the steps in the order they were given."""
    def __call__(self, parser, namespace, values, option_string=None):
        steps = getattr(namespace, "steps", None) or []
        steps.append((self.dest, values))
        namespace.steps = steps


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = lambda message: (p.print_usage(sys.stderr),
                               print(f"browser.py: {message}", file=sys.stderr), sys.exit(3))
    p.add_argument("--url", action=Step, help="open URL, wait for its load event")
    p.add_argument("--wait-for", action=Step, metavar="JS", help="wait until JS is true")
    p.add_argument("--type", action=Step, nargs=2, metavar=("SELECTOR", "TEXT"))
    p.add_argument("--click", action=Step, metavar="SELECTOR")
    p.add_argument("--eval", action=Step, metavar="JS", help="print JSON of JS's value")
    p.add_argument("--exec", action=Step, metavar="COMMAND", help="run a shell command")
    p.add_argument("--screenshot", action=Step, metavar="PATH", help="write a PNG")
    p.add_argument("--window", default="1024x768", metavar="WxH",
                   help="the window's size in pixels (1024x768)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="bound of each step, seconds (10)")
    args = p.parse_args(argv)
    if not getattr(args, "steps", None):
        p.error("no steps given")
    w, _, h = args.window.partition("x")
    if not (w.isdigit() and h.isdigit()):
        p.error(f"--window takes WIDTHxHEIGHT, not '{args.window}'")
    args.window = f"{w},{h}"
    return args


def run_command(command, bound):
    """--exec: runs COMMAND with sh, for at most `bound` seconds."""
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True,
                              timeout=bound)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"--exec {command!r} did not end within {bound} s")
    if done.stdout:
        print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise StepFailed(f"--exec {command!r} exited with {done.returncode}: "
                         f"{done.stderr.strip()}")


async def run(args):
    async with Browser(args.timeout, args.window) as b:
        for step, value in args.steps:
            try:
                if step == "url":
                    await b.navigate(value)
                elif step == "wait_for":
                    await b.wait_for(value)
                elif step == "type":
                    await b.type(*value)
                elif step == "click":
                    await b.click(value)
                elif step == "eval":
                    print(json.dumps(await b.evaluate(value)), flush=True)
                elif step == "exec":
                    run_command(value, args.timeout)
                elif step == "screenshot":
                    await b.screenshot(value)
            except StepFailed as e:
                for line in b.log[-10:]:
                    print("browser.py: the page logged " + line, file=sys.stderr)
                raise


def main(argv):
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so Chromium is killed too
    try:
        asyncio.run(run(args))
    except CannotStart as e:
        print(f"browser.py: Chromium could not start: {e}", file=sys.stderr)
        return 2
    except StepFailed as e:
        print(f"browser.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
