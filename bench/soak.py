"""The soak and fault run: mixed traffic for a bounded time, faults on a schedule,
invariants checked at the end.

    python -m bench.soak --minutes 30
    python -m bench.soak --seconds 60 --require-all-faults   # what the test suite runs

It starts its own redis-server and a gunicorn (2 gthread workers, the shipped
``django_streamer.gunicorn_config``) serving ``bench/soak_views.py`` from a
``startproject``-shaped project, all on 127.0.0.1, drives every kind of stream
with well- and badly-behaved clients, injects the faults of
:data:`FAULTS`, then prints one row per invariant with its figure, and exits 1
if any fails. It ends only the processes it started, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak_client import Result, fetch, hold_open
from bench.soak_views import LIMITS, csv_body

ROOT = Path(__file__).resolve().parent.parent
CHUNK_SIZE = 65536  # STREAMER_CHUNK_SIZE's default: the most a cut stream can be over-counted
FILE_SIZE = 2 * 1024 * 1024  # the payload /file sends
# Bounds on a worker's growth over the last phase (a leak grows past them).
FD_BOUND, THREAD_BOUND, RSS_BOUND_MIB = 16, 8, 64


# -- processes we start ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


class Redis:
    """A redis-server on a free port that keeps nothing: a restart comes back empty."""

    def __init__(self, directory: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise SystemExit(
                "bench.soak: redis-server is missing (Debian: apt-get install redis-server)"
            )
        self.directory, self.port = directory, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary or "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=log,
            )
        if not wait_port(self.port, 10):
            raise SystemExit("bench.soak: redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def command(self, *args: str) -> bytes:
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            s.sendall(payload)
            return s.recv(4096)


class Gunicorn:
    """The soak site under gunicorn, started with the shipped config."""

    def __init__(self, env: dict[str, str], directory: Path, *, max_requests: int = 0) -> None:
        self.port = free_port()
        self.log = directory / "gunicorn.log"
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:django_streamer.gunicorn_config",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--graceful-timeout",
            "5",
        ]
        if max_requests:
            args += ["--max-requests", str(max_requests), "--max-requests-jitter", "50"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*args, "bench.soak_wsgi"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        if not wait_port(self.port, 20):
            self.stop()
            raise SystemExit(f"bench.soak: gunicorn did not start; see {self.log}")

    def workers(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        found.append(int(entry.name))
        return sorted(found)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def resources(pid: int) -> tuple[int, int, int] | None:
    """Open fds, threads and RSS (KiB) of one process."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0])


# -- traffic --------------------------------------------------------------------------

ABORTABLE = ("csv", "jsonl", "zip", "file", "sse")


def make_request(rng: random.Random) -> tuple[str, str, dict[str, str]]:
    """A (path, behaviour, headers) drawn from the mix."""
    kind = rng.choices(
        ["csv", "jsonl", "zip", "file", "sse", "small", "plain", "fail", "lim"],
        weights=[18, 12, 6, 8, 6, 14, 6, 4, 26],
    )[0]
    behaviour = rng.choices(["full", "slow", "abort", "stall"], weights=[75, 8, 12, 5])[0]
    headers: dict[str, str] = {}
    if kind in ("csv", "jsonl") and rng.random() < 0.4:
        headers["Accept-Encoding"] = rng.choice(["gzip", "br", "zstd"])
    rows = rng.choice([200, 2000, 20000])
    path = {
        "csv": f"/csv?rows={rows}",
        "jsonl": f"/jsonl?rows={rows}",
        "zip": f"/zip?rows={rows}",
        "file": "/file",
        "sse": f"/sse?seconds={rng.choice([1, 2, 4])}",
        "small": "/small",
        "plain": "/plain",
        "fail": "/fail",
        "lim": f"/lim/{rng.choice(list(LIMITS))}?hold={rng.choice([0.2, 0.5, 1.0])}",
    }[kind]
    if kind in ABORTABLE and behaviour in ("abort", "stall"):
        path += "&abort=1" if "?" in path else "?abort=1"
    elif behaviour in ("abort", "stall"):
        behaviour = "full"  # the names compared byte for byte only see full reads
    return path, behaviour, headers


def stream_name(path: str) -> str:
    base, _, query = path.partition("?")
    name = "soak." + base.strip("/").replace("/", ".").replace("lim.", "lim.")
    return name + ".abort" if "abort=1" in query else name


@dataclass
class Window:
    """A fault's time span: what happens in it (plus grace) is explained by it."""

    fault: str
    start: float
    end: float = 0.0
    detail: str = ""


@dataclass
class Soak:
    args: argparse.Namespace
    directory: Path
    redis: Redis
    env: dict[str, str]
    server: Gunicorn | None = None
    results: list[Result] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    stop_traffic: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    aborted_storm: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def server_log(self) -> str:
        return (self.directory / "gunicorn.log").read_text(errors="replace")

    # traffic ---------------------------------------------------------------------

    def client(self, seed: int, deadline: float) -> None:
        rng = random.Random(seed)
        while not self.stop_traffic.is_set() and time.monotonic() < deadline:
            path, behaviour, headers = make_request(rng)
            result = fetch(self.port, path, behaviour=behaviour, headers=headers, rng=rng)
            result.name = stream_name(path)
            with self.lock:
                self.results.append(result)
            if result.error == "connect":
                time.sleep(0.1)  # the server is restarting

    def storm(self, deadline: float, count: int) -> None:
        """Downloads aborted after their first bytes, as fast as they go."""
        rng = random.Random(7)
        while count > 0 and not self.stop_traffic.is_set() and time.monotonic() < deadline:
            path = rng.choice(
                ["/file?abort=1", "/csv?rows=20000&abort=1", "/zip?rows=2000&abort=1"]
            )
            result = fetch(self.port, path, behaviour="abort", rng=rng, abort_after=1)
            result.name = stream_name(path)
            with self.lock:
                self.results.append(result)
                self.aborted_storm += 1
            count -= 1
            if result.error == "connect":
                time.sleep(0.1)  # the server is restarting

    def traffic(self, seconds: float, *, clients: int, storm: int) -> list[threading.Thread]:
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self.client, args=(i, deadline), daemon=True)
            for i in range(clients)
        ]
        threads.append(threading.Thread(target=self.storm, args=(deadline, storm), daemon=True))
        for t in threads:
            t.start()
        return threads

    # faults ----------------------------------------------------------------------

    @contextlib.contextmanager
    def window(self, fault: str, detail: str = "") -> Iterator[Window]:
        w = Window(fault, time.monotonic(), detail=detail)
        self.windows.append(w)
        try:
            yield w
        finally:
            w.end = time.monotonic()

    def kill_worker(self) -> None:
        assert self.server is not None
        with self.window("SIGKILL a worker mid-stream") as w:
            for _ in range(50):  # a slot of the cluster pool, on the worker to kill
                path = "/lim/cluster?hold=8"
                result = Result(path=path, behaviour="full", name=stream_name(path))
                holder = hold_open(self.port, path)
                if holder.status == 200:
                    break
                holder.close()
                time.sleep(0.1)
            else:
                w.detail = "no slot to hold: not run"
                self.failures.append("SIGKILL: no stream to kill")
                return
            result.worker = victim = int(holder.headers["x-worker-pid"])
            os.kill(victim, signal.SIGKILL)
            self.killed.add(victim)
            holder.read_rest(result)
            holder.close()
            with self.lock:
                self.results.append(result)
            w.detail = f"pid {victim}, its stream {'ENDED CLEANLY' if result.clean else 'cut'}"
            if result.clean:
                self.failures.append("a stream of a SIGKILLed worker ended cleanly")
            time.sleep(1.5)

    def reload(self) -> None:
        assert self.server is not None
        with self.window("SIGHUP reload"):
            self.server.signal(signal.SIGHUP)
            time.sleep(3)

    def redis_pause(self) -> None:
        with self.window("Redis CLIENT PAUSE 2 s"):
            self.redis.command("CLIENT", "PAUSE", "2000")
            time.sleep(2.5)

    def redis_restart_empty(self) -> None:
        with self.window("Redis stopped 2 s, restarted empty"):
            self.redis.stop()
            time.sleep(2)
            self.redis.start()
            time.sleep(1)

    def fill_metrics_disk(self) -> None:
        directory = Path(self.env["SOAK_METRICS_DIR"])
        if not self.args.mounted:
            self.notes.append("metrics tmpfs filled: not run (mounting a tmpfs needs root)")
            return
        filler = directory / "filler"
        with self.window("metrics tmpfs full 3 s") as w:
            # Unbuffered, and the error caught outside the file: closing it flushes nothing.
            with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 65536)
            w.detail = f"{filler.stat().st_size // 1024} KiB filler"
            assert self.server is not None
            # A worker born while the disk is full must still serve.
            self.server.signal(signal.SIGTTIN)
            time.sleep(3)
            filler.unlink()
            self.server.signal(signal.SIGTTOU)
            time.sleep(1)

    def restart_server(self, *, recycling: bool = True) -> None:
        assert self.server is not None
        with self.window("SIGTERM drain, restart") as w:
            started = time.monotonic()
            self.server.stop()
            w.detail = f"drained in {time.monotonic() - started:.1f} s"
            max_requests = self.args.max_requests if recycling else 0
            self.server = Gunicorn(self.env, self.directory, max_requests=max_requests)


FAULTS: list[tuple[str, Callable[[Soak], None]]] = [
    ("kill", Soak.kill_worker),
    ("pause", Soak.redis_pause),
    ("reload", Soak.reload),
    ("redis", Soak.redis_restart_empty),
    ("disk", Soak.fill_metrics_disk),
    ("kill", Soak.kill_worker),
    ("restart", Soak.restart_server),
]
CYCLE = 150  # seconds: a long run goes through the faults again every CYCLE


# -- the end: invariants ----------------------------------------------------------------


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The Prometheus endpoint as {family_sample_name: {labels: value}}."""
    result = fetch(port, "/streaming/metrics/", behaviour="full", keep_body=True)
    families: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for line in result.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        pairs = tuple(tuple(p.split("=", 1)) for p in labels.rstrip("}").split(",") if "=" in p)
        families[name][tuple((k, v.strip('"')) for k, v in pairs)] = float(value)
    return families


def by_stream(family: dict[tuple[tuple[str, str], ...], float]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for labels, value in family.items():
        totals[dict(labels).get("stream", "")] += value
    return totals


@dataclass
class Row:
    invariant: str
    figure: str
    ok: bool


def check_pools(soak: Soak) -> list[Row]:
    rows = []
    time.sleep(3.5)  # one cluster lease: a killed worker's leases have run out
    for scope, limit in LIMITS.items():
        holders = [hold_open(soak.port, f"/lim/{scope}?hold=3") for _ in range(limit)]
        statuses = [h.status for h in holders]
        admitted = statuses.count(200)
        extra = ""
        refused_ok = True
        if scope != "process":  # process pools are per worker: one more may reach the other
            over = fetch(soak.port, f"/lim/{scope}?hold=0.1", behaviour="full")
            refused_ok = over.status == 429
            extra = f", one more: {over.status}"
        for h in holders:
            h.close()
        rows.append(
            Row(
                f"{scope} pool admits its full limit",
                f"{admitted}/{limit} admitted{extra}",
                admitted == limit and refused_ok,
            )
        )
    return rows


def peak_holders(results: list[Result], name: str) -> int:
    """The most responses of one pool that clients saw streaming at once.

    A holder counts from its head to 50 ms before its last byte, so that a
    slot given back just before the client read the end is not counted twice.
    """
    edges = []
    for r in results:
        if r.name == name and r.status == 200 and r.clean and r.ended - 0.05 > r.head_at:
            edges += [(r.head_at, 1), (r.ended - 0.05, -1)]
    peak = level = 0
    for _, step in sorted(edges):
        level += step
        peak = max(peak, level)
    return peak


def check_peaks(soak: Soak) -> list[Row]:
    rows = []
    for scope in ("host", "cluster"):  # process pools are per worker
        peak = peak_holders(soak.results, f"soak.lim.{scope}")
        limit = LIMITS[scope]
        rows.append(
            Row(
                f"{scope} pool never over its limit (as clients saw it)",
                f"peak {peak} of {limit}",
                peak <= limit,
            )
        )
    return rows


def check_metrics(soak: Soak) -> list[Row]:
    deadline = time.monotonic() + 15
    while True:
        families = scrape(soak.port)
        active = by_stream(families.get("django_streamer_streams_active", {}))
        if not any(v for k, v in active.items() if k.startswith("soak.")) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    started = by_stream(families.get("django_streamer_streams_started_total", {}))
    finished = by_stream(families.get("django_streamer_streams_finished_total", {}))
    sent = by_stream(families.get("django_streamer_bytes_total", {}))
    rows = []
    bad = [
        f"{n}: {started[n]:.0f} != {finished.get(n, 0):.0f} + {active.get(n, 0):.0f}"
        for n in sorted(started)
        if n.startswith("soak.") and started[n] != finished.get(n, 0) + active.get(n, 0)
    ]
    total = sum(v for k, v in started.items() if k.startswith("soak."))
    rows.append(
        Row(
            "metrics identity: started = finished + active, per name",
            f"{total:.0f} streams, {len(bad)} names off {bad[:3]}",
            not bad,
        )
    )
    rows += [compare_bytes(soak, name, sent.get(name, 0)) for name in sorted(received_names(soak))]
    return rows


def received_names(soak: Soak) -> set[str]:
    return {r.name for r in soak.results if r.status == 200 and r.name != "soak.plain"}


def compare_bytes(soak: Soak, name: str, sent: float) -> Row:
    """Bytes in the metrics against bytes clients got, for one stream name.

    Exact, but for three allowances, each counted: a stream cut mid-body may
    be over-counted by what was in flight (one chunk, or a whole file sent
    with sendfile); a stream on a SIGKILLed worker may miss its last publish
    (recorders publish every 0.1 s); one that ran while the metrics disk was
    full may not be recorded at all. Clients that went away on purpose
    (``.abort`` names) got less than was sent: metrics >= clients, less the
    same unrecorded allowance.
    """
    disk = [w for w in soak.windows if w.fault.startswith("metrics tmpfs")]
    # A cap's refusal (a 503 on a feed) is a stream of its own, counted too.
    ours = [r for r in soak.results if r.name == name and r.status in (200, 503)]
    got = sum(r.body_bytes for r in ours)
    unrecorded = [r for r in ours if r.worker in soak.killed or any(cause(r, w) for w in disk)]
    low = got - sum(r.body_bytes for r in unrecorded)
    if name.endswith(".abort"):
        figure = f"{sent:.0f} vs {got}" + (f" (at least {low})" if unrecorded else "")
        return Row(f"bytes {name}: metrics >= clients", figure, sent >= low)
    cut = [r for r in ours if not r.clean]
    slack = max(CHUNK_SIZE, FILE_SIZE if name == "soak.file" else 0)
    high = got + len(cut) * slack
    allow = []
    if unrecorded:
        allow.append(f"{len(unrecorded)} on a killed worker or a full disk")
    if cut:
        allow.append(f"{len(cut)} cut")
    figure = f"{sent:.0f} vs {got}" + (
        f" (allowed {low}..{high}: {', '.join(allow)})" if allow else ""
    )
    return Row(f"bytes {name}: metrics = clients", figure, low <= sent <= high)


GRACE = 3.0  # seconds after a fault in which what it broke may still show


def cause(r: Result, w: Window) -> bool:
    """Whether a fault's window overlaps a request's life (plus grace)."""
    return r.started <= w.end + GRACE and (r.ended or r.started) >= w.start


def refused_by_a_cap(r: Result) -> bool:
    """A feed refused by STREAMER_WSGI_MAX_FEEDS: a 503 by design, not a failure."""
    return r.status == 503 and r.path.startswith("/sse")


def hurt(r: Result) -> bool:
    """A 5xx (but a cap's refusal), or a connection error the client did not cause."""
    if r.status is not None and r.status >= 500:
        return not refused_by_a_cap(r)
    return bool(r.error) and r.error != "aborted by the client" and r.name != "soak.fail"


def check_responses(soak: Soak) -> list[Row]:
    fails = [r for r in soak.results if r.name == "soak.fail" and r.status == 200]
    clean = sum(r.clean for r in fails)
    rows = [
        Row(
            "failed sources never end cleanly",
            f"{clean} of {len(fails)} looked complete",
            clean == 0 and len(fails) > 0,
        )
    ]
    wrong = [
        r
        for r in soak.results
        if r.name == "soak.csv"
        and r.clean
        and r.status == 200
        and not r.encoded
        and r.body_bytes != len(csv_body(int(r.path.split("rows=")[1].split("&")[0])))
    ]
    rows.append(Row("clean CSV ends have every byte", f"{len(wrong)} short", not wrong))

    def explained(r: Result) -> bool:
        return any(cause(r, w) for w in soak.windows)

    server_errors = [r for r in soak.results if r.status is not None and r.status >= 500]
    server_errors = [r for r in server_errors if not refused_by_a_cap(r)]
    unexplained = [r for r in server_errors if not explained(r)]
    rows.append(
        Row(
            "5xx only where a fault explains it",
            f"{len(server_errors)} 5xx, {len(unexplained)} unexplained "
            f"({sum(map(refused_by_a_cap, soak.results))} feeds refused by the feed cap) "
            f"{[(r.path, r.status) for r in unexplained[:3]]}",
            not unexplained,
        )
    )
    broken = [r for r in soak.results if hurt(r) and r.error]
    lone = [r for r in broken if not explained(r)]
    rows.append(
        Row(
            "connection errors only where a fault explains them",
            f"{len(broken)} errors, {len(lone)} unexplained "
            f"{[(r.path, r.error) for r in lone[:3]]}",
            not lone,
        )
    )
    return rows


def check_resources(baseline: dict[int, tuple[int, int, int]], soak: Soak) -> list[Row]:
    assert soak.server is not None
    now = {pid: r for pid in soak.server.workers() if (r := resources(pid))}
    rows = []
    for i, (label, bound) in enumerate(
        [("open fds", FD_BOUND), ("threads", THREAD_BOUND), ("RSS KiB", RSS_BOUND_MIB * 1024)]
    ):
        before = max((r[i] for r in baseline.values()), default=0)
        after = max((r[i] for r in now.values()), default=0)
        rows.append(
            Row(
                f"worker {label} within +{bound} of baseline",
                f"{before} -> {after}",
                after - before <= bound and bool(now),
            )
        )
    return rows


# -- the run ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="streamer-soak-"))
    metrics = directory / "metrics"
    metrics.mkdir(mode=0o700)
    args.mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(metrics)],
            capture_output=True,
        )
        args.mounted = mounted.returncode == 0
    if args.require_all_faults and not args.mounted:
        raise SystemExit("bench.soak: cannot mount the metrics tmpfs (needs root)")
    payload = directory / "payload.bin"
    payload.write_bytes(os.urandom(1024) * (FILE_SIZE // 1024))
    redis = Redis(directory)
    env = {
        **os.environ,
        "SOAK_DIR": str(directory),
        "SOAK_METRICS_DIR": str(metrics),
        "SOAK_LIMITER_DIR": str(directory / "pools"),
        "SOAK_REDIS_URL": redis.url,
        "SOAK_FILE": str(payload),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "8",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # set in soak_wsgi.py, as startproject does
    soak = Soak(args=args, directory=directory, redis=redis, env=env)
    started = time.monotonic()
    try:
        soak.server = Gunicorn(env, directory, max_requests=args.max_requests)
        total = args.seconds
        fault_phase, final_phase = total * 0.6, total * 0.3
        threads = soak.traffic(fault_phase, clients=args.clients, storm=args.storm // 2)
        faults = [(n, f) for n, f in FAULTS if n in args.faults.split(",")]
        faults *= max(1, int(fault_phase // CYCLE))
        step = fault_phase / (len(faults) + 1)
        for _name, fault in faults:
            time.sleep(step)
            fault(soak)
        for t in threads:
            t.join(30)
        soak.restart_server(recycling=False)
        # The last phase: a server with no recycling, so its workers can be measured,
        # warm (under traffic) at first and again when the traffic has stopped.
        threads = soak.traffic(
            final_phase, clients=args.clients, storm=args.storm - args.storm // 2
        )
        time.sleep(final_phase / 4)
        baseline = {pid: r for pid in soak.server.workers() if (r := resources(pid))}
        for t in threads:
            t.join(final_phase + 30)
        soak.stop_traffic.set()
        time.sleep(2)
        rows = check_responses(soak)
        rows += check_metrics(soak)
        rows += check_peaks(soak)
        rows += check_pools(soak)
        rows += check_resources(baseline, soak)
        rows += [Row("faults did what they should", f, False) for f in soak.failures]
    finally:
        soak.stop_traffic.set()
        if soak.server is not None:
            soak.server.stop()
        redis.stop()
        if args.mounted:
            subprocess.run(["umount", str(metrics)], check=False)
    report(soak, rows, time.monotonic() - started)
    if all(r.ok for r in rows):
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    print(f"logs kept in {directory}")
    return 1


def report(soak: Soak, rows: list[Row], elapsed: float) -> None:
    statuses = Counter(r.status for r in soak.results)
    behaviours = Counter(r.behaviour for r in soak.results)
    print(
        f"\n== soak: {elapsed:.0f} s, {len(soak.results)} requests, "
        f"{soak.aborted_storm} aborted downloads in the storm"
    )
    print(f"   statuses {dict(sorted(statuses.items(), key=str))}; clients {dict(behaviours)}")
    print("\n| fault | at | detail | requests it cut or failed |\n|---|---|---|---|")
    t0 = soak.windows[0].start if soak.windows else 0
    for w in soak.windows:
        n = sum(1 for r in soak.results if hurt(r) and cause(r, w))
        print(f"| {w.fault} | +{w.start - t0:.0f} s, {w.end - w.start:.1f} s | {w.detail} | {n} |")
    recycled = soak.server_log().count("Autorestarting worker")
    print(f"| max_requests recycling | all along | {recycled} workers recycled | |")
    for note in soak.notes:
        print(f"| {note} | | |")
    print("\n| invariant | figure | |\n|---|---|---|")
    for r in rows:
        print(f"| {r.invariant} | {r.figure} | {'ok' if r.ok else 'FAILED'} |")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float)
    length.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--storm", type=int, default=0, help="aborted downloads (default 40/min)")
    parser.add_argument("--max-requests", type=int, default=150)
    parser.add_argument("--require-all-faults", action="store_true")
    parser.add_argument(
        "--faults", default=",".join(dict(FAULTS)), help="which, comma-separated (default: all)"
    )
    args = parser.parse_args(argv)
    if args.minutes:
        args.seconds = args.minutes * 60
    args.seconds = max(30.0, args.seconds)
    if not args.storm:
        args.storm = int(args.seconds / 60 * 2000) if args.minutes else 1000
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
