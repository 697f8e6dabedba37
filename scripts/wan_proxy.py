#!/usr/bin/env python3
"""A TCP proxy that makes loopback look like a distant CDN: a shared link, a per-connection
rate and a delay each way. For scripts/bench.sh's WAN row; not part of trackfs.

Usage: wan_proxy.py --upstream HOST:PORT [--listen HOST:PORT] [--link-mbs 100]
                    [--conn-mbs 16] [--delay-ms 10] [--stats FILE]
  Listens on --listen (default 127.0.0.1:0, a free port) and prints "PORT" on stdout once
  it accepts connections. Every byte each way is
    - paced to --conn-mbs per TCP connection (MB/s, 10^6 bytes), as a CDN that limits each
      connection does, or a long lossy path does to one TCP stream;
    - paced to --link-mbs for all connections together (one shared link, each direction);
    - delivered --delay-ms after it left (so a round trip costs twice that), and a new
      connection first waits one round trip (the TCP handshake).
  SIGUSR1 appends one JSON line to --stats (connections opened since the last SIGUSR1, those
  that carried bytes to the client, the most open at once, bytes each way) and starts
  counting afresh. SIGTERM/SIGINT stop it.

Why a proxy of our own: nginx's limit_rate lets every request's first second through at full
speed (so 1-4 MiB ranges are never slowed), Apache's mod_ratelimit sends 200 ms bursts, and
this kernel has no netem. Why Python asyncio: the pacing is a few lines of arithmetic on a
virtual clock, it needs no build, and at 100 MB/s in 64 KiB chunks it handles ~1,600 chunks a
second, which costs a fraction of one core (bench.sh checks that the proxy is not the limit:
8 parallel curl ranges through it must reach the link rate). Not modelled: TCP slow start and
loss; each connection runs at its full rate after the handshake.
"""

import argparse
import asyncio
import json
import signal
import sys
import time

CHUNK = 256 << 10
# Bytes a connection may hold in its delay line before it stops reading (backpressure): more
# than its rate times the delay, so pacing, not this, is the limit.
QUEUE_BYTES = 2 << 20


# How far a pacer's clock may lag behind now: the credit that makes up for this process
# waking late (on a busy machine, by milliseconds), and so the largest burst it allows: 20 ms
# is one round trip's worth (320 KB for a connection at 16 MB/s, what a TCP window in flight
# holds), well short of a 1 MiB range, so ranges are still paced.
SLACK = 0.020


class Pacer:
    """A virtual clock: when the link (or connection) is next free, at `rate` bytes/second."""

    def __init__(self, rate):
        self.rate = rate
        self.free_at = 0.0

    def earliest(self, now):
        return max(now - SLACK, self.free_at)

    def take(self, start, nbytes):
        self.free_at = start + nbytes / self.rate


class Stats:
    """Counts for one window (between two SIGUSR1s)."""

    def __init__(self):
        self.open = 0
        self.window = 0
        self.reset()

    def reset(self):
        self.window += 1
        self.opened = 0
        self.used = 0
        self.peak_open = self.open
        self.down = 0
        self.up = 0

    def snapshot(self):
        return {
            "connections": self.opened,
            "used": self.used,
            "peak_open": self.peak_open,
            "bytes_down": self.down,
            "bytes_up": self.up,
        }


async def pump(reader, writer, conn_pacer, link_pacer, delay, count):
    """Copies reader to writer until EOF: each chunk leaves when both pacers allow it and
    arrives `delay` seconds after it has fully left."""
    line = asyncio.Queue()
    space = asyncio.Semaphore(QUEUE_BYTES // CHUNK)

    async def deliver():
        while True:
            item = await line.get()
            if item is None:
                break
            at, data = item
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            space.release()

    delivery = asyncio.create_task(deliver())
    try:
        while True:
            await space.acquire()
            data = await reader.read(CHUNK)
            if not data:
                break
            now = time.monotonic()
            # The chunk leaves when both its connection and the link are free; it holds the
            # link for its length at the link's rate, and its connection at the connection's.
            start = max(conn_pacer.earliest(now), link_pacer.earliest(now))
            link_pacer.take(start, len(data))
            conn_pacer.take(start, len(data))
            done = max(conn_pacer.free_at, link_pacer.free_at)
            count(len(data))
            # Reading on only when this chunk has left keeps the per-connection rate honest.
            if done - now > 0:
                await asyncio.sleep(done - now)
            await line.put((done + delay, data))
        await line.put(None)
        await delivery
    except (ConnectionError, OSError):
        pass
    finally:
        delivery.cancel()


class Proxy:
    def __init__(self, args):
        self.upstream = args.upstream.rsplit(":", 1)
        self.conn_rate = args.conn_mbs * 1e6
        self.down_link = Pacer(args.link_mbs * 1e6)
        self.up_link = Pacer(args.link_mbs * 1e6)
        self.delay = args.delay_ms / 1e3
        self.stats = Stats()
        self.stats_path = args.stats

    def dump_stats(self):
        if self.stats_path:
            with open(self.stats_path, "a") as f:
                f.write(json.dumps(self.stats.snapshot()) + "\n")
        self.stats.reset()

    async def handle(self, client_r, client_w):
        s = self.stats
        s.opened += 1
        s.open += 1
        s.peak_open = max(s.peak_open, s.open)
        try:
            # The handshake: one round trip before the first byte can go anywhere.
            await asyncio.sleep(2 * self.delay)
            try:
                up_r, up_w = await asyncio.open_connection(self.upstream[0], int(self.upstream[1]))
            except OSError:
                client_w.close()
                return

            def add_up(n):
                s.up += n

            window = [0]

            def add_down(n):
                s.down += n
                if window[0] != s.window:
                    window[0] = s.window
                    s.used += 1

            # HTTP clients do not half-close: when either side is done, so is the connection
            # (a client that leaves closes the server's side too, as it would over a WAN;
            # nginx would otherwise hold it for its keep-alive time).
            pumps = [
                asyncio.create_task(
                    pump(client_r, up_w, Pacer(self.conn_rate), self.up_link, self.delay, add_up)
                ),
                asyncio.create_task(
                    pump(up_r, client_w, Pacer(self.conn_rate), self.down_link, self.delay, add_down)
                ),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pumps:
                task.cancel()
            up_w.close()
        finally:
            s.open -= 1
            client_w.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--link-mbs", type=float, default=100)
    p.add_argument("--conn-mbs", type=float, default=16)
    p.add_argument("--delay-ms", type=float, default=10)
    p.add_argument("--stats")
    args = p.parse_args()
    proxy = Proxy(args)
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(proxy.handle, host, int(port), backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGUSR1, proxy.dump_stats)
    async with server:
        await stop


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
