#!/usr/bin/env python3
"""A platform worker for pilegate, on redis-py: the uplink read with a consumer group,
deduplicated by msgid, and a command answered back to the pile, with its outcome.

    pip install redis
    python3 worker.py --redis 127.0.0.1:6379 --group workers --consumer w1

What it shows (ops/REDIS-CONTRACT.md has every field):
  * The group is created at the stream's first entry, so entries written before the
    first worker started are read too; entries another worker took and never
    acknowledged (it crashed) are claimed after --claim-idle-ms.
  * An entry may arrive twice (the gateway re-sends an XADD whose reply was lost; a
    resend past redis.dedup_window_ms): SET NX on its msgid keeps one.
  * A start-failure record ("命令": "启动失败原因") is answered with a log-upload
    command ("日志召唤") to the node that holds the pile (the presence hash), and
    the command's outcome is read from pilegate:down:outcome.
Run by Tests/GatewayTests/WorkerExampleTests.swift against a real gateway and Redis.
"""
import argparse
import json
import time

import redis

ap = argparse.ArgumentParser()
ap.add_argument("--redis", default="127.0.0.1:6379")
ap.add_argument("--stream", default="pilegate:up")
ap.add_argument("--group", default="workers")
ap.add_argument("--consumer", default="worker-1")
ap.add_argument("--claim-idle-ms", type=int, default=60000)
ap.add_argument("--ftp", default="198.51.100.7", help="server the piles upload their logs to")
ap.add_argument("--exit-after", type=int, default=0, help="stop after this many distinct entries (tests)")
ap.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (tests)")
args = ap.parse_args()

host, port = args.redis.rsplit(":", 1)
r = redis.Redis(host=host, port=int(port), decode_responses=False)
try:
    r.xgroup_create(args.stream, args.group, id="0", mkstream=True)
except redis.ResponseError as e:
    if "BUSYGROUP" not in str(e):
        raise

started = time.monotonic()
handled = 0
commands = {}   # command entry id -> device, until its final outcome is seen
last = r.xrevrange("pilegate:down:outcome", count=1)
outcome_cursor = last[0][0] if last else "0-0"   # outcomes from now on
reqid = 0


def handle(entry_id, f):
    """One uplink entry: fields device, topic, qos, ts, node, msgid, payload (bytes)."""
    global reqid
    device = f[b"device"].decode()
    try:
        msg = json.loads(f[b"payload"])
    except ValueError:
        print(f"{device}: payload is not JSON ({len(f[b'payload'])} bytes)", flush=True)
        return
    kind = msg.get("命令") if isinstance(msg, dict) else None
    print(f"{device}: {kind} (msgid {f[b'msgid'].decode()}, qos {f[b'qos'].decode()})", flush=True)
    if kind != "启动失败原因":
        return
    where = r.hget("pilegate:presence", device)
    if where is None:
        print(f"{device}: not connected, no command sent", flush=True)
        return
    node = where.decode().split("|")[0]
    reqid += 1
    command = {"命令": "日志召唤", "reqid": reqid, "服务器地址": args.ftp, "端口": 21,
               "用户名": "anonymous", "密码": "", "FTP路径": f"/ops/{device}/upload/log/", "文件名": "BillingGun1.0.log"}
    cid = r.xadd(f"pilegate:down:{node}", {"device": device, "payload": json.dumps(command, ensure_ascii=False),
                                            "qos": "1", "ttl": "300"})
    commands[cid] = device
    print(f"{device}: sent 日志召唤 as {cid.decode()} via node {node}", flush=True)


while True:
    if args.timeout and time.monotonic() - started > args.timeout:
        raise SystemExit(f"timed out: {handled} entries, {len(commands)} commands without an outcome")
    if args.exit_after and handled >= args.exit_after and not commands:
        break
    # Entries a crashed worker of this group left pending, then new ones.
    _, claimed, *_ = r.xautoclaim(args.stream, args.group, args.consumer, args.claim_idle_ms, "0-0", count=100)
    fresh = r.xreadgroup(args.group, args.consumer, {args.stream: ">"}, count=100, block=500)
    batch = claimed + (fresh[0][1] if fresh else [])
    for entry_id, fields in batch:
        if r.set(f"worker:{args.group}:seen:{fields[b'msgid'].decode()}", 1, nx=True, ex=86400):
            handle(entry_id, fields)
            handled += 1
        else:
            print(f"duplicate msgid {fields[b'msgid'].decode()} skipped", flush=True)
        r.xack(args.stream, args.group, entry_id)
    # Outcomes: one final entry per command (acked, sent, offline, not_subscribed,
    # expired, rejected); queued is interim.
    if commands:
        out = r.xread({"pilegate:down:outcome": outcome_cursor}, count=100, block=100)
        for _, entries in out or []:
            for oid, o in entries:
                outcome_cursor = oid
                cid = o[b"id"]
                if cid in commands and o[b"outcome"] != b"queued":
                    print(f"{commands.pop(cid)}: command {cid.decode()} {o[b'outcome'].decode()}", flush=True)
print(f"done: {handled} entries", flush=True)
