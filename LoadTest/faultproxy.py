#!/usr/bin/env python3
"""A TCP proxy on loopback that makes a clean link behave like a pile's 4G SIM link.

Each connection is forwarded to TARGET through two one-way pipes. Each pipe keeps the
byte order and adds what the options ask for:
  --delay-ms, --jitter-ms   one-way delay, base +- uniform jitter (RTT = 2 x delay)
  --rate-kbit               a bandwidth cap per direction (kbit/s)
  --stall-every, --stall-ms stalls: each connection freezes both ways for stall-ms,
                            at exponential intervals averaging stall-every seconds
                            (counted from the end of the last stall: they never overlap)
  --reset-fraction, --reset-within
                            that fraction of connections is reset (RST) at a random
                            moment within reset-within seconds
  --blackhole-fraction, --blackhole-after, --blackhole-within
                            that fraction goes half-open: at a random moment
                            blackhole-after + [0, blackhole-within] seconds in, all traffic is dropped silently
                            both ways and neither side sees a FIN or an RST
  --bytewise-ms             deliver one byte per write, this many ms apart
Connections are chosen for resets and blackholes by --seed, so a run can be repeated.
It runs until --duration seconds have passed (or SIGTERM/SIGINT), then writes its
counters as JSON to --stats (and stdout).

  faultproxy.py --listen 127.0.0.1:19000 --target 127.0.0.1:1883 --delay-ms 150 \
      --jitter-ms 100 --rate-kbit 64 --stall-every 30 --stall-ms 5000 --duration 300
"""
import argparse, asyncio, json, random, signal, socket, struct, sys, time

stats = {"connections": 0, "open": 0, "bytes_up": 0, "bytes_down": 0, "stalls": 0, "resets": 0,
         "blackholed": 0, "dropped_bytes": 0, "target_refused": 0}


def address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


class Connection:
    def __init__(self, args, rng):
        self.args, self.rng = args, rng
        self.stalled_until = 0.0
        self.blackholed = False
        self.closed = False
        self.writers = []

    async def pipe(self, reader, writer, counter):
        """Read everything; deliver it in order after its delay, at the capped rate."""
        queue, last = asyncio.Queue(), 0.0
        a = self.args

        async def deliver():
            while True:
                at, chunk = await queue.get()
                if chunk is None:
                    break
                while True:
                    now = time.monotonic()
                    wait = max(at, self.stalled_until) - now
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                if self.blackholed or self.closed:
                    stats["dropped_bytes"] += len(chunk)
                    continue
                try:
                    if a.bytewise_ms > 0:
                        for i in range(len(chunk)):
                            writer.write(chunk[i:i + 1])
                            await writer.drain()
                            await asyncio.sleep(a.bytewise_ms / 1000)
                    else:
                        writer.write(chunk)
                        await writer.drain()
                    stats[counter] += len(chunk)
                except (ConnectionError, OSError):
                    break
            if not self.blackholed:   # a half-open pile never hears of the close
                self.close()

        task = asyncio.ensure_future(deliver())
        try:
            while not self.closed:
                chunk = await reader.read(16384)
                if not chunk:
                    break
                if self.blackholed:
                    stats["dropped_bytes"] += len(chunk)
                    continue
                now = time.monotonic()
                delay = max(0.0, a.delay_ms + self.rng.uniform(-a.jitter_ms, a.jitter_ms)) / 1000
                at = max(last, now + delay)
                if a.rate_kbit > 0:
                    at = max(at, last) + len(chunk) * 8 / (a.rate_kbit * 1000)
                last = at
                await queue.put((at, chunk))
        except (ConnectionError, OSError):
            pass
        await queue.put((last, None))   # the close after what was sent, in order
        await task

    async def faults(self):
        a, rng = self.args, self.rng
        if a.reset_fraction > 0 and rng.random() < a.reset_fraction:
            asyncio.ensure_future(self.later(rng.uniform(0, a.reset_within), self.reset))
        if a.blackhole_fraction > 0 and rng.random() < a.blackhole_fraction:
            asyncio.ensure_future(self.later(a.blackhole_after + rng.uniform(0, a.blackhole_within), self.blackhole))
        while a.stall_every > 0 and not self.closed:
            await asyncio.sleep(rng.expovariate(1 / a.stall_every))
            if self.closed:
                break
            stats["stalls"] += 1
            self.stalled_until = time.monotonic() + a.stall_ms / 1000
            await asyncio.sleep(a.stall_ms / 1000)   # stalls do not overlap: the next interval starts after this one

    async def later(self, seconds, action):
        await asyncio.sleep(seconds)
        if not self.closed:
            action()

    def blackhole(self):
        self.blackholed = True
        stats["blackholed"] += 1

    def reset(self):
        stats["resets"] += 1
        for w in self.writers:
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        for w in self.writers:
            w.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--jitter-ms", type=float, default=0)
    p.add_argument("--rate-kbit", type=float, default=0)
    p.add_argument("--stall-every", type=float, default=0)
    p.add_argument("--stall-ms", type=float, default=5000)
    p.add_argument("--reset-fraction", type=float, default=0)
    p.add_argument("--reset-within", type=float, default=60)
    p.add_argument("--blackhole-fraction", type=float, default=0)
    p.add_argument("--blackhole-within", type=float, default=60)
    p.add_argument("--blackhole-after", type=float, default=0)
    p.add_argument("--bytewise-ms", type=float, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--stats")
    a = p.parse_args()
    for h in (a.listen, a.target):
        if not h.startswith("127.") and not h.startswith("[::1]"):
            sys.exit(f"{h}: loopback only")
    rng = random.Random(a.seed)
    target = address(a.target)

    async def accepted(creader, cwriter):
        c = Connection(a, random.Random(rng.random()))
        try:
            ureader, uwriter = await asyncio.open_connection(*target)
        except OSError:
            stats["target_refused"] += 1
            cwriter.close()
            return
        stats["connections"] += 1
        stats["open"] += 1
        c.writers = [cwriter, uwriter]
        faults = asyncio.ensure_future(c.faults())
        await asyncio.gather(c.pipe(creader, uwriter, "bytes_up"), c.pipe(ureader, cwriter, "bytes_down"))
        c.close()
        faults.cancel()
        stats["open"] -= 1

    host, port = address(a.listen)
    server = await asyncio.start_server(accepted, host, port, backlog=4096, limit=1 << 16)
    print(f"faultproxy listening on {a.listen} -> {a.target}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), a.duration)
    except asyncio.TimeoutError:
        pass
    server.close()
    text = json.dumps(stats)
    print(text, flush=True)
    if a.stats:
        open(a.stats, "w").write(text)


if __name__ == "__main__":
    asyncio.run(main())
