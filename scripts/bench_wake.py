"""Wake-up latency of an idle daemon; run through `scripts/bench_wake`."""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx

from forgea_gh import webhook

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-wake-secret"
PING = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def wait_ready(base: str) -> bool:
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(200):
            try:
                if client.get("/readyz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05, help="idle seconds between sends")
    parser.add_argument(
        "--split",
        action="store_true",
        help="receiver and worker as two processes (serve --role receiver / --role worker):"
        " the worker learns of deliveries from the database's commits",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="forgea-wake-") as tmp:
        db = Path(tmp) / "wake.db"
        port = free_port()
        env = os.environ | {
            "FORGEA_GH_DATABASE__URL": f"sqlite:///{db}",
            "FORGEA_GH_WEBHOOK__SECRETS": f'["{SECRET}"]',
            # A slow tick proves the wake-up does the work (the receiver's, or with
            # --split the worker following the database's commits), not the tick.
            "FORGEA_GH_WORKER__POLL_INTERVAL_SECONDS": "30",
            "FORGEA_GH_LOG__LEVEL": "warning",
        }
        forgea = str(ROOT / ".venv/bin/forgea-gh")
        ports = [port, free_port()] if args.split else [port]
        commands = (
            [
                [forgea, "serve", "--role", "receiver", "--port", str(ports[0])],
                [forgea, "serve", "--role", "worker", "--port", str(ports[1])],
            ]
            if args.split
            else [[forgea, "serve", "--port", str(port)]]
        )
        daemons = [subprocess.Popen(command, env=env) for command in commands]
        try:
            base = f"http://127.0.0.1:{port}"
            for ready_port in ports:
                if not wait_ready(f"http://127.0.0.1:{ready_port}"):
                    print(f"daemon on port {ready_port} did not become ready", file=sys.stderr)
                    return 1
            with httpx.Client(base_url=base, timeout=10) as client:
                for _ in range(args.count):
                    headers = {
                        "content-type": "application/json",
                        "x-github-event": "ping",
                        "x-github-delivery": str(uuid.uuid4()),
                        "x-hub-signature-256": webhook.sign(PING, SECRET.encode()),
                    }
                    response = client.post("/webhooks/github", content=PING, headers=headers)
                    if response.status_code != 202:
                        print(f"unexpected {response.status_code}: {response.text}")
                        return 1
                    time.sleep(args.gap)
                time.sleep(0.5)
        finally:
            for daemon in daemons:
                daemon.terminate()
            for daemon in daemons:
                daemon.wait(timeout=20)

        conn = sqlite3.connect(db)
        rows = conn.execute(
            "SELECT d.received_at, j.completed_at FROM jobs j JOIN deliveries d"
            " ON d.id = j.delivery_id ORDER BY d.id"
        ).fetchall()
        conn.close()
    done = [(parse(c) - parse(r)).total_seconds() * 1000 for r, c in rows if c is not None]
    if len(done) != args.count:
        print(f"only {len(done)} of {args.count} deliveries were processed")
        return 1
    slowest = max(range(len(done)), key=done.__getitem__)
    print(f"slowest: delivery #{slowest + 1} of {len(done)}, {done[slowest]:.1f} ms")
    done.sort()
    p99 = done[min(len(done) - 1, int(len(done) * 0.99))]
    layout = "receiver and worker in two processes" if args.split else "one process (--role all)"
    print(
        f"deliveries: {len(done)} (one at a time, {args.gap * 1000:.0f} ms idle between; {layout})"
    )
    print(
        f"received -> completed: p50 {statistics.median(done):.1f} ms, p99 {p99:.1f} ms, "
        f"max {done[-1]:.1f} ms (target: within 100 ms) "
        f"{'PASS' if done[-1] <= 100 else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
