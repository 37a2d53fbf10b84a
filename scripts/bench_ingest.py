"""Ingest benchmark: forgea_gh's receiver against a bare Starlette endpoint.

Run it through `scripts/bench_ingest`. In one run, on 127.0.0.1, it serves

  * bare:      a Starlette app that reads the body and answers 202, on uvicorn
               with the settings `forgea-gh serve` uses;
  * forgea_gh: `forgea-gh serve --role receiver` (signature check, then a
               durable group commit to SQLite, synchronous=FULL), on a fresh
               database in a temp dir; then, as an extra line, `--role all`
               (receiver and processor in one process);

drives each with `wrk -t1` (wrk gets one core, the server the other) at 32
and 128 connections, POSTing a signed ~7 KB push payload with a unique
X-GitHub-Delivery per request. The servers take turns, round after round
(3 by default), so that drift in the machine's speed reaches both sides of
each ratio alike. It prints every run, then the medians over the rounds:
requests/s, the ratio, p50/p99 latency and PASS/FAIL against the targets
(ratio >= 0.5 at both concurrencies; p99 <= 25 ms at 32 connections).
After the forgea_gh runs it counts the rows in `deliveries`.

Exit status: 0 whether or not the targets are met (it is a measurement);
1 if something broke (a server did not start, wrk failed, non-2xx responses
or socket errors, fewer stored deliveries than acknowledged requests).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORGEA = ROOT / ".venv" / "bin" / "forgea-gh"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "github-payloads" / "push" / "payload.json"
SECRET = "bench-ingest-secret"
PATH = "/webhooks/github"
TARGET_BYTES = 7000
MIN_RATIO = 0.5
MAX_P99_MS_AT_32 = 25.0


# -- the bare server -----------------------------------------------------------


def serve_bare(port: int) -> None:
    """Read the body, answer 202: the ceiling for any Starlette receiver."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def receive(request: Request) -> Response:
        await request.body()
        return Response(status_code=202)

    app = Starlette(routes=[Route(PATH, receive, methods=["POST"])])
    # The same uvicorn settings as `forgea-gh serve` (forgea_gh/cli.py).
    uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
    ).run()


# -- payload and wrk script ----------------------------------------------------


def build_payload() -> tuple[bytes, int]:
    """A compact push payload of about TARGET_BYTES, and how many commits it has."""
    if FIXTURE.is_file():
        payload = json.loads(FIXTURE.read_text())
    else:  # a minimal stand-in with the fields ingest looks at
        payload = {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": "1" * 40,
            "commits": [],
            "head_commit": {
                "id": "1" * 40,
                "message": "Update README.md",
                "timestamp": "2024-01-01T00:00:00Z",
                "url": "https://github.com/octo-org/octo-repo/commit/" + "1" * 40,
                "author": {"name": "Octo Cat", "email": "octocat@github.com"},
                "committer": {"name": "GitHub", "email": "noreply@github.com"},
                "added": [],
                "removed": [],
                "modified": ["README.md"],
            },
            "repository": {"id": 1296269, "full_name": "octo-org/octo-repo"},
            "sender": {"login": "octocat", "id": 1},
        }
    # Copies of head_commit (with their own ids) until the body reaches ~7 KB.
    template = payload.get("head_commit") or {"message": "Update README.md"}
    commits = payload["commits"] = list(payload.get("commits") or [])
    body = json.dumps(payload, separators=(",", ":")).encode()
    while len(body) < TARGET_BYTES:
        commit = copy.deepcopy(template)
        commit["id"] = hashlib.sha1(f"bench-commit-{len(commits)}".encode()).hexdigest()
        commits.append(commit)
        body = json.dumps(payload, separators=(",", ":")).encode()
    return body, len(payload["commits"])


WRK_SCRIPT = """\
-- POST the signed push body; every request carries a new X-GitHub-Delivery.
local f = assert(io.open("{body_path}", "rb"))
wrk.method = "POST"
wrk.path = "{path}"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "GitHub-Hookshot/bench-ingest"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = "{signature}"

local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end

local counter = 0
function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = "{run_id}-" .. tid .. "-" .. counter
  return wrk.format()
end
"""


# -- wrk -----------------------------------------------------------------------


@dataclass
class WrkResult:
    connections: int
    requests: int  # completed requests
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu: float  # share of one core used by the server process
    output: str

    @property
    def broken(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str, connections: int, server_cpu: float) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, output, re.MULTILINE)
        if not m:
            raise ValueError(f"wrk output has no match for {pattern!r}:\n{output}")
        return m

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        connections=connections,
        requests=int(find(r"^\s*(\d+) requests in ").group(1)),
        rps=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)").group(1)),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)").group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        server_cpu=server_cpu,
        output=output,
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_wrk(
    script: Path, port: int, connections: int, seconds: float, server_pid: int
) -> WrkResult:
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
        "-s", str(script), f"http://127.0.0.1:{port}{PATH}",
    ]  # fmt: skip
    cpu_before, started = cpu_seconds(server_pid), time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    cpu = (cpu_seconds(server_pid) - cpu_before) / (time.monotonic() - started)
    if done.returncode != 0:
        raise Broken(f"wrk exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout, connections, cpu)


# -- servers -------------------------------------------------------------------


class Broken(Exception):
    """Something failed that makes the figures meaningless."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.cmd, self.env, self.log = name, cmd, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        with self.log.open("wb") as log:
            # Own session: a Ctrl-C reaches this script, which stops the server.
            self.proc = subprocess.Popen(
                [*self.cmd, "--port", str(port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Broken(f"{self.name} exited {self.proc.returncode} on start:\n{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise Broken(f"{self.name} did not listen on 127.0.0.1:{port} within 20 s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully, the store commits), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Measured:
    label: str
    runs: dict[int, list[WrkResult]]  # by connections, one per round
    server: Server
    port: int = 0
    sent: int = 0  # completed requests over every wrk run, warm-up included
    stored: int | None = None  # rows in `deliveries` after the server stopped


def drive(measured: Measured, tmp: Path, body: bytes, conns: int, seconds: float) -> WrkResult:
    """One wrk run against a started server; raises Broken on errors or non-2xx answers."""
    script = tmp / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            body_path=tmp / "payload.json",
            path=PATH,
            signature="sha256=" + hmac.new(SECRET.encode(), body, "sha256").hexdigest(),
            run_id=f"bench-{uuid.uuid4().hex[:12]}",
        )
    )
    server = measured.server
    result = run_wrk(script, measured.port, conns, seconds, server.proc.pid)  # type: ignore[union-attr]
    measured.sent += result.requests
    if result.broken:
        raise Broken(
            f"{measured.label} at {conns} connections: {result.non_2xx} non-2xx responses, "
            f"{result.socket_errors} socket errors\n{result.output}\n"
            f"server log:\n{server.tail()}"
        )
    return result


def measure_interleaved(
    contenders: list[Measured], tmp: Path, body: bytes, args: argparse.Namespace
) -> None:
    """Start every server, warm each up, then take turns: each round runs every
    server at every concurrency, the order flipping from round to round.

    Taking turns is what makes the ratio mean something here: this machine's
    speed drifts by tens of percent over a minute (the bare server alone has
    measured anywhere from 8,000 to 14,500 requests/s), and a drift during one
    server's block of runs would otherwise land wholly in the ratio.
    """
    try:
        for m in contenders:
            m.port = free_port()
            m.server.start(m.port)
            drive(m, tmp, body, args.connections[0], args.warmup)
        for round_no in range(1, args.rounds + 1):
            order = contenders if round_no % 2 else contenders[::-1]
            for conns in args.connections:
                for m in order:
                    result = drive(m, tmp, body, conns, args.duration)
                    m.runs.setdefault(conns, []).append(result)
                    print(
                        f"  round {round_no}  {m.label:<26} c={conns:<4} {result.rps:>9,.0f} req/s"
                        f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                        f"server cpu {result.server_cpu:4.0%}",
                        flush=True,
                    )
    finally:
        for m in contenders:
            m.server.stop()
    for m in contenders:
        proc = m.server.proc
        if proc is not None and proc.returncode not in (0, -signal.SIGTERM):
            raise Broken(f"{m.label} exited {proc.returncode}:\n{m.server.tail()}")


def count_deliveries(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])
    finally:
        conn.close()


# -- main ----------------------------------------------------------------------


def forgea_env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEA_GH_")}
    env.update(
        FORGEA_GH_DATABASE__URL=f"sqlite:///{db}",  # db is absolute: sqlite:////abs/path
        FORGEA_GH_DATABASE__SYNCHRONOUS="FULL",
        FORGEA_GH_WEBHOOK__SECRETS=json.dumps([SECRET]),
        FORGEA_GH_LOG__LEVEL="warning",
        FORGEA_GH_SERVER__HOST="127.0.0.1",
    )
    return env


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench_ingest: wrk is not installed: sudo apt-get install wrk", file=sys.stderr)
        return 1
    if not FORGEA.exists():
        print(f"bench_ingest: {FORGEA} is missing: run scripts/_venv first", file=sys.stderr)
        return 1

    body, commits = build_payload()
    print(f"payload: push, {len(body):,} bytes of compact JSON ({commits} commits), HMAC-SHA256")
    print(
        f"wrk -t1, {args.warmup:g} s warm-up per server, then {args.rounds} round(s) of "
        f"{args.duration:g} s per server at each of {', '.join(map(str, args.connections))} "
        f"connections, taking turns; 127.0.0.1; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start (anything else running skews the figures)"
    )
    print(
        "forgea_gh: `forgea-gh serve --role receiver` measures ingest only "
        "(signature check + group commit, synchronous=FULL), no processing\n",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "payload.json").write_bytes(body)
        python = sys.executable

        def forgea(role: str) -> Measured:
            server = Server(
                f"forgea-gh --role {role}",
                [str(FORGEA), "serve", "--role", role, "--host", "127.0.0.1"],
                forgea_env(tmp / f"{role}.db"),
                tmp / f"forgea-{role}.log",
            )
            return Measured(f"forgea_gh --role {role}", {}, server)

        bare_server = Server(
            "bare", [python, __file__, "--serve-bare"], dict(os.environ), tmp / "bare.log"
        )
        bare = Measured("bare starlette", {}, bare_server)
        receiver = forgea("receiver")
        measure_interleaved([bare, receiver], tmp, body, args)
        pairs = [(bare, receiver)]
        if not args.receiver_only:
            # Not part of the target: one more round, receiver and processor
            # in one process, against the bare server again.
            extra = Measured(bare.label, {}, bare_server)
            together = forgea("all")
            measure_interleaved(
                [extra, together], tmp, body, argparse.Namespace(**{**vars(args), "rounds": 1})
            )
            pairs.append((extra, together))
        forgea_runs = [f for _, f in pairs]
        for m in forgea_runs:
            m.stored = count_deliveries(tmp / f"{m.label.rsplit(' ', 1)[1]}.db")

    print()
    print(report(pairs, args.connections))
    for m in forgea_runs:
        note = "ok" if m.stored is not None and m.stored >= m.sent else "FEWER ROWS THAN 2xx"
        print(
            f"durability ({m.label}): {m.stored:,} rows in deliveries; wrk counted {m.sent:,} "
            f"completed requests, warm-up included ({note}; rows may exceed the count by "
            f"requests whose responses wrk cut off at the end of a run)"
        )
    broken = [m for m in forgea_runs if m.stored is None or m.stored < m.sent]
    if broken:
        print("bench_ingest: ERROR: acknowledged deliveries are missing from the database")
        return 1
    return 0


def report(pairs: list[tuple[Measured, Measured]], connections: list[int]) -> str:
    """Medians over the rounds; each round's ratio pairs runs made one after the other."""
    head = (
        f"{'conns':>5}  {'bare req/s':>10}  {'forgea req/s':>12}  {'ratio':>5}  "
        f"{'bare p50/p99 ms':>16}  {'forgea p50/p99 ms':>17}  target"
    )
    rounds = len(pairs[0][1].runs[connections[0]])
    lines = [f"medians of {rounds} round(s); ratios per round in brackets", head, "-" * len(head)]
    for bare, m in pairs:
        if m is not pairs[0][1]:
            lines.append(f"extra: {m.label} (receiver + processor in one process)")
        for c in connections:
            b, f = bare.runs[c], m.runs[c]
            ratios = [fr.rps / br.rps for br, fr in zip(b, f, strict=True)]
            ratio = statistics.median(ratios)
            p99 = statistics.median(r.p99_ms for r in f)
            checks = [f"ratio>={MIN_RATIO}" if ratio >= MIN_RATIO else f"ratio<{MIN_RATIO}"]
            ok = ratio >= MIN_RATIO
            if c == 32:
                ok = ok and p99 <= MAX_P99_MS_AT_32
                checks.append(
                    f"p99<={MAX_P99_MS_AT_32:g}ms" if p99 <= MAX_P99_MS_AT_32
                    else f"p99>{MAX_P99_MS_AT_32:g}ms"
                )  # fmt: skip
            lines.append(
                f"{c:>5}  {statistics.median(r.rps for r in b):>10,.0f}  "
                f"{statistics.median(r.rps for r in f):>12,.0f}  {ratio:>5.3f}  "
                f"{statistics.median(r.p50_ms for r in b):>7.2f}/"
                f"{statistics.median(r.p99_ms for r in b):<8.2f}  "
                f"{statistics.median(r.p50_ms for r in f):>7.2f}/{p99:<9.2f}  "
                f"{'PASS' if ok else 'FAIL'} ({', '.join(checks)}) "
                f"[{' '.join(f'{r:.2f}' for r in ratios)}]"
            )
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM takes the same way out as Ctrl-C: servers stopped, temp dir removed.
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns each server takes at each concurrency"
    )
    parser.add_argument(
        "--connections",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[32, 128],
        help="comma-separated (default 32,128)",
    )
    parser.add_argument(
        "--receiver-only", action="store_true", help="skip the extra `--role all` run"
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.port)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except Broken as exc:
        print(f"bench_ingest: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_ingest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
