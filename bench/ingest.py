"""Benchmark (b): segments per second through ``POST /v1/events``, against a pass-through proxy.

Three kinds of process, all on 127.0.0.1: this one (the load generator), the server under test (the real
gateway, ``consent-gateway serve`` with settings from the environment, SQLite in a temporary directory;
or the baseline, a tiny aiohttp proxy that forwards each body to the receiver with a ClientSession), and
the receiver (a tiny aiohttp app that answers 200 and counts). Separate processes keep the load generator
off the server's event loop. With two or more cores the server under test runs alone on one core and the
load generator and receiver share another, so each server's figure is what one core of its own serves.

Each of ``clients`` concurrent clients owns one meeting and posts one segment event per request, in
order, with a bearer token. Before the measured phase every meeting's participants have joined and given
or refused consent, and a warm-up round has run (it also compiles each meeting's name scrubber). Only
consenting speakers' segments are sent, so every request should reach the receiver exactly once. The
gateway answers before it delivers, so its figure is end to end: from the first request until the
receiver holds every segment. Rounds alternate proxy and gateway; the median round is reported. Each round
also records the server's CPU time per segment (user + system, from /proc): on a shared, noisy machine the
ratio of those is a steadier figure than the throughput ratio, and it says where the core went.

Issue 5 (durable delivery): the gateway writes each segment's content to its outbox, in the transaction that
logs the decisions, before it answers. With ``postgres`` set a second gateway process runs the same way on a
fresh PostgreSQL database (created and dropped here), so one run gives both stores against the same
pass-through rounds; the CPU of the database backends serving it is counted too. After the throughput rounds,
``latency`` offers every server the same segments at constant rates (an open model) and times each from the
client's POST to its arrival at the receiver: first the issue-5 rates (``rates``, well below every knee),
then a ladder of higher rates (``sweep``) that each server climbs until its first step past the knee.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gzip
import io
import json
import os
import pstats
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import latency
import replicas

from gateway.sealing import new_key_spec
from gateway.settings import redacted_url

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "meetings.jsonl.gz"
TARGET_RATIO = 0.60
"""The foundation issue's target: gateway over pass-through throughput."""
DURABLE_TARGET_RATIO = 0.50
"""Issue 5's target with the durable outbox on, on each store."""
SWEEP = (400.0, 700.0, 1000.0, 1400.0, 2000.0, 2800.0, 4000.0, 5600.0, 8000.0)
"""Offered rates (segments/s) climbed after the latency phases, each server until its knee."""
QUICK_SWEEP = (500.0, 1000.0, 2000.0, 4000.0)
SEED = 2026
REFUSE_SHARE = 0.25
MAX_TEXT = 100_000
POLICY = """\
policy: bench-ingest
purposes:
  summary:
    description: Meeting summaries.
    notice: What you say is sent to the summary service if you agree.
    notice_version: bench-1
destinations:
  - id: summariser
    url: {url}
    purposes: [summary]
    delivery: {delivery}
"""
FALLBACK_NAMES = ("Priya Raman", "Tomás Ortega", "Wen Li", "Sam Okafor")
FALLBACK_TEXT = (
    "Thanks {n}, I think the numbers look right, let's check the pricing page before Friday.",
    "Sure, I'll look at it today and flag anything odd to {n} and the team.",
    "Could we move the launch review to next week? The design isn't final yet.",
)


@dataclass(frozen=True)
class Script:
    """One client's meeting: who is there, who consents, and what the consenting speakers say."""

    meeting_id: str
    people: tuple[tuple[str, str, bool], ...]
    """(participant id, name, consents)."""
    texts: tuple[tuple[str, str], ...]
    """(participant id, text) of consenting speakers, used in a cycle."""


# ------------------------------------------------------------------------------------------ scripts


def scripts(clients: int, corpus: Path = CORPUS) -> tuple[list[Script], str]:
    """Meetings for the clients: Earnings-21 calls (real names, spoken in the text) if the corpus is here."""
    calls = _earnings21(corpus) if corpus.exists() else []
    rng = random.Random(SEED)
    out = []
    for n in range(clients):
        if calls:
            roster, turns = calls[n % len(calls)]
        else:
            roster = {f"s{i}": name for i, name in enumerate(FALLBACK_NAMES)}
            turns = [
                (f"s{i % 4}", t.format(n=FALLBACK_NAMES[(i + 1) % 4]))
                for i, t in enumerate(FALLBACK_TEXT * 4)
            ]
        out.append(_script(f"bench-meeting-{n:03d}", roster, turns, rng))
    source = "Earnings-21 calls from the shared corpus" if calls else "synthetic text (corpus not found)"
    return out, source


def _earnings21(corpus: Path) -> list[tuple[dict[str, str], list[tuple[str, str]]]]:
    calls = []
    with gzip.open(corpus, "rt", encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            if raw["meeting_id"].startswith("earnings21/"):
                names = raw["meta"].get("speaker_names", {})
                turns = [
                    (t["speaker"], t["text"])
                    for t in raw["turns"]
                    if t["speaker"] and t["text"].strip() and len(t["text"]) <= MAX_TEXT
                ]
                roster = {label: names.get(label, label) for label, _ in turns}
                calls.append((roster, turns))
    return calls


def _script(
    meeting_id: str, roster: dict[str, str], turns: list[tuple[str, str]], rng: random.Random
) -> Script:
    labels = list(roster)
    consents = {label: rng.random() >= REFUSE_SHARE for label in labels}
    if not any(consents.values()):
        consents[labels[0]] = True
    pid = {label: f"p{i + 1}" for i, label in enumerate(labels)}
    people = tuple((pid[label], roster[label], consents[label]) for label in labels)
    texts = tuple((pid[label], text) for label, text in turns if consents[label])
    return Script(meeting_id, people, texts)


def _event(script: Script, **fields: Any) -> dict[str, Any]:
    return {"meeting_id": script.meeting_id, "at": datetime.now(UTC).isoformat(), **fields}


def setup_events(script: Script) -> list[dict[str, Any]]:
    events = [
        _event(script, type="participant.joined", participant={"id": pid, "name": name})
        for pid, name, _ in script.people
    ]
    events += [
        _event(
            script,
            type="consent",
            participant_id=pid,
            purposes=["summary"],
            indicated_by=pid,
            channel="api",
            decision="given" if yes else "refused",
        )
        for pid, _, yes in script.people
    ]
    return events


def segment_bodies(script: Script, first: int, count: int) -> list[bytes]:
    """Serialised before the clock starts, so that the load generator spends its time sending."""
    out = []
    for n in range(first, first + count):
        pid, text = script.texts[n % len(script.texts)]
        event = _event(script, type="segment", segment_id=f"s{n}", participant_id=pid, text=text)
        out.append(json.dumps(event, ensure_ascii=False).encode())
    return out


# ---------------------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if this process dies, so no server outlives the benchmark."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cpu_words() -> str:
    plan = cpu_plan()
    if plan is None:
        return "one core: load generator, server and receiver share it"
    server, clients = plan
    return f"server under test alone on CPU {min(server)}, load generator and receiver on {sorted(clients)}"


def cpu_plan() -> tuple[set[int], set[int]] | None:
    """(server core, load generator and receiver cores), or None on a one-core machine."""
    cores = sorted(os.sched_getaffinity(0))
    return ({cores[0]}, set(cores[1:])) if len(cores) >= 2 else None


def _pinned(cpus: set[int] | None) -> Callable[[], None]:
    def start() -> None:
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return start


@contextlib.contextmanager
def process(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    announces_port: bool = False,
    cpus: set[int] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int | None]]:
    err = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(  # noqa: S603 - argv built here from sys.executable and fixed words
        argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT, preexec_fn=_pinned(cpus)
    )
    try:
        port = _read_port(proc) if announces_port else None
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        if log:
            err.close()  # type: ignore[union-attr]


def _read_port(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("PORT "):
        raise RuntimeError(f"server did not announce its port (got {line!r}, exit {proc.poll()})")
    return int(line.split()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LoopThread:
    """A server process's main thread alone: the one its asyncio event loop runs on (aiosqlite's writer
    and any other thread are the rest of the process's CPU)."""

    pid: int


def cpu_seconds(pid: int | tuple[int, ...] | LoopThread) -> float:
    """User + system CPU time of a process (or several, summed; or a process's main thread) so far (Linux
    /proc): where the cores went."""
    if isinstance(pid, LoopThread):
        return _stat_cpu(Path(f"/proc/{pid.pid}/task/{pid.pid}/stat"))
    if isinstance(pid, tuple):
        # a database backend may end between two readings (pooled connections are recycled): what it used
        # is then missing from the later sum, so the figure can only be too low; NaN says it is unknown
        readings = [cpu_seconds(one) for one in pid]
        return float("nan") if any(r != r for r in readings) else sum(readings)
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settle(pids: tuple[int, ...], idle_share: float = 0.05, limit: float = 15.0) -> float:
    """Wait (bounded) until ``pids`` are idle: the outcomes of the throughput rounds are still being recorded
    (and the database vacuumed) for a while after the receiver has everything, and a latency phase taken
    then would measure that backlog. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = cpu_seconds(pids)
        await asyncio.sleep(0.5)
        if cpu_seconds(pids) - before < idle_share * 0.5:
            break
    return time.monotonic() - start


async def backend_pids(database: str) -> tuple[int, ...]:
    """The PostgreSQL server processes serving ``database``'s connections (the gateway's pool), so that the
    database's share of a segment's CPU is counted too (its background writers are not)."""
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return tuple(int(row["pid"]) for row in rows)


# --------------------------------------------------------------------------------------------- load


async def wait_ready(http: aiohttp.ClientSession, url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {seconds} s")


async def received(http: aiohttp.ClientSession, receiver: str) -> int:
    async with http.get(f"{receiver}/stats") as resp:
        return int((await resp.json())["count"])


async def post_all(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], per_client: list[list[bytes]]
) -> tuple[list[float], int]:
    """Every client sends its bodies one after another; returns latencies (s) and non-200 answers."""
    latencies: list[float] = []
    failures = 0

    async def client(bodies: list[bytes]) -> None:
        nonlocal failures
        for body in bodies:
            start = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                failures += resp.status != 200
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client(b) for b in per_client))
    return latencies, failures


async def phase(
    name: str,
    url: str,
    token: str,
    receiver: str,
    pids: dict[str, int | tuple[int, ...] | LoopThread],
    per_client: list[list[bytes]],
    wait_limit: float,
) -> dict[str, Any]:
    """One measured phase: send everything, then wait until the receiver has it all (bounded)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    total = sum(len(b) for b in per_client)
    connector = aiohttp.TCPConnector(limit=len(per_client) + 4)
    async with aiohttp.ClientSession(connector=connector) as http:
        before = await received(http, receiver)
        cpu0 = {role: cpu_seconds(pid) for role, pid in pids.items()}
        start = time.perf_counter()
        latencies, failures = await post_all(http, url, headers, per_client)
        answered = time.perf_counter()
        got = await received(http, receiver) - before
        while got < total and time.perf_counter() - answered < wait_limit:
            await asyncio.sleep(0.005)
            got = await received(http, receiver) - before
        done = time.perf_counter()
        cpu = {role: round(cpu_seconds(pid) - cpu0[role], 2) for role, pid in pids.items()}
    latencies.sort()
    return {
        "name": name,
        "requests": total,
        "failures": failures,
        "delivered": got,
        "answered_per_s": total / (answered - start),
        "end_to_end_per_s": got / (done - start),
        "seconds": done - start,
        "drain_seconds": done - answered,
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "cpu_seconds": cpu,
        "cpu_us_per_segment": {
            role: round(seconds / total * 1e6) if seconds == seconds else None  # NaN: not known
            for role, seconds in cpu.items()
        },
    }


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def split(bodies: list[list[bytes]], start: int, count: int) -> list[list[bytes]]:
    return [b[start : start + count] for b in bodies]


# ----------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Plan:
    clients: int
    requests: int
    warmup: int
    rounds: int
    log_level: str
    profile: bool = False
    postgres: str | None = None
    """A PostgreSQL server URL without a database: a second gateway runs on a fresh database there."""
    rates: tuple[float, ...] = ()
    """Segments per second offered in the open-model latency phases, each below the servers' knees."""
    latency_seconds: float = 0.0
    """How long each server is offered each rate."""
    sweep: tuple[float, ...] = ()
    """Higher offered rates, climbed after ``rates`` until each server's knee (its first step past it)."""
    sweep_seconds: float = 0.0
    """How long each server is offered each sweep rate."""
    batch_seconds: float | None = None
    """None: the destination is ``delivery: stream`` (the issues' figures); else ``batched``, this window."""

    def delivery(self) -> str:
        """The destination's ``delivery`` (and batch window) in the gateways' policy."""
        if self.batch_seconds is None:
            return "stream"
        return f"batched\n    batch_seconds: {self.batch_seconds}"

    def steps(self) -> list[tuple[float, float, int]]:
        """(rate, seconds, segments per client: whole rounds over the meetings) of every open-model step."""
        ladder = [(r, self.latency_seconds) for r in self.rates]
        ladder += [(r, self.sweep_seconds) for r in self.sweep if r not in self.rates]
        return [
            (rate, seconds, -(-round(rate * seconds) // self.clients))
            for rate, seconds in sorted(ladder)
            if seconds > 0
        ]


BACKENDS = {"gateway": "SQLite", "gateway-pg": "PostgreSQL"}
"""Gateway server names in the results and the store each runs on (both with the durable outbox)."""


async def _run(plan: Plan, tmp: Path) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        databases = {"gateway": f"sqlite:///{tmp}/gateway.db"}
        if plan.postgres:
            databases["gateway-pg"] = await stack.enter_async_context(replicas.database(plan.postgres))
        return await _run_on(plan, tmp, databases)


def gateway_env(
    log_level: str, port: int, database: str, policy: Path, token: str, secrets_file: Path
) -> dict[str, str]:
    """The environment of ``consent-gateway serve`` under test (bench/streams.py uses it too)."""
    return {
        **os.environ,
        "CONSENT_GATEWAY_HOST": "127.0.0.1",
        "CONSENT_GATEWAY_PORT": str(port),
        "CONSENT_GATEWAY_DATABASE": database,
        "CONSENT_GATEWAY_POLICIES": str(policy),
        "CONSENT_GATEWAY_INGEST_TOKEN": token,
        "CONSENT_GATEWAY_OUTBOX_KEYS": new_key_spec(),
        # the other generated secrets go here, never to a secrets.json in the working tree
        "CONSENT_GATEWAY_SECRETS_FILE": str(secrets_file),
        "PYTHONPATH": str(ROOT),
        "CONSENT_GATEWAY_LOG_FORMAT": "json",
        "CONSENT_GATEWAY_LOG_LEVEL": log_level,
    }


async def _run_on(plan: Plan, tmp: Path, databases: dict[str, str]) -> dict[str, Any]:
    meetings, text_source = scripts(plan.clients)
    per_client = plan.requests // plan.clients
    warm = max(1, plan.warmup // plan.clients)
    measured = warm + per_client * plan.rounds
    bodies = [segment_bodies(m, 0, measured) for m in meetings]
    mean_bytes = statistics.mean(len(b) for bs in bodies for b in bs)
    token = secrets.token_urlsafe(24)
    py = sys.executable
    rounds: dict[str, list[dict[str, Any]]] = {"proxy": [], **{name: [] for name in databases}}
    server_cpus, client_cpus = cpu_plan() or (None, None)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)  # the load generator (this process) beside the receiver
    receiver_cmd = [py, str(BENCH / "servers.py"), "receiver"]
    with process(receiver_cmd, announces_port=True, cpus=client_cpus) as (recv, recv_port):
        receiver = f"http://127.0.0.1:{recv_port}"
        policy = tmp / "bench-ingest.yaml"
        policy.write_text(POLICY.format(url=f"{receiver}/segments", delivery=plan.delivery()))
        with contextlib.ExitStack() as procs:
            targets: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
            for name, database in databases.items():
                port = free_port()
                env = gateway_env(plan.log_level, port, database, policy, token, tmp / f"{name}-secrets.json")
                cmd = gateway_command(py)
                if plan.profile and name == "gateway":
                    cmd = [
                        py,
                        str(BENCH / "servers.py"),
                        "gateway",
                        "--profile-out",
                        str(tmp / "gateway.prof"),
                    ]
                gw, _ = procs.enter_context(process(cmd, env=env, log=tmp / f"{name}.log", cpus=server_cpus))
                await _set_up(f"http://127.0.0.1:{port}", token, meetings, ready_seconds=60)
                targets[name] = (f"http://127.0.0.1:{port}/v1/events", gw)
            proxy_cmd = [py, str(BENCH / "servers.py"), "proxy", "--upstream", f"{receiver}/segments"]
            proxy, proxy_port = procs.enter_context(process(proxy_cmd, announces_port=True, cpus=server_cpus))
            targets = {"proxy": (f"http://127.0.0.1:{proxy_port}/v1/events", proxy), **targets}
            for name, (url, _) in targets.items():
                await phase(f"{name} warm-up", url, token, receiver, {}, split(bodies, 0, warm), 30)
            for r in range(plan.rounds):
                chunk = split(bodies, warm + r * per_client, per_client)
                for name, (url, proc) in targets.items():
                    profiling = plan.profile and name == "gateway"
                    if profiling:
                        proc.send_signal(signal.SIGUSR1)
                    pids: dict[str, int | tuple[int, ...] | LoopThread] = {
                        name: proc.pid,
                        f"{name} event loop": LoopThread(proc.pid),
                        "receiver": recv.pid,
                    }
                    if databases.get(name, "").startswith("postgresql://"):
                        pids["postgres"] = await backend_pids(databases[name])
                    result = await phase(name, url, token, receiver, pids, chunk, 60)
                    if profiling:
                        proc.send_signal(signal.SIGUSR2)
                        await asyncio.sleep(0.5)  # let it write the profile
                    rounds[name].append(result)
                    _print_round(r + 1, result)
            open_model = await _open_model(plan, meetings, measured, targets, databases, token, receiver)
        log_lines = {name: sum(1 for _ in (tmp / f"{name}.log").open("rb")) for name in databases}
    return _results(plan, rounds, open_model, log_lines, tmp) | {
        "warmup_requests": warm * plan.clients,
        "requests_per_round": per_client * plan.clients,
        "text": text_source,
        "mean_body_bytes": round(mean_bytes),
    }


async def _open_model(
    plan: Plan,
    meetings: list[Script],
    first: int,
    targets: dict[str, tuple[str, subprocess.Popen[bytes]]],
    databases: dict[str, str],
    token: str,
    receiver: str,
) -> list[tuple[float, float, dict[str, dict[str, Any]]]]:
    """Every server, step by step up the offered rates (the same segments for each server at a step), each
    server dropping out after its first step past the knee; (rate, seconds, phase by server) per step."""
    steps: list[tuple[float, float, dict[str, dict[str, Any]]]] = []
    climbing = list(targets)
    for rate, seconds, size in plan.steps():
        if not climbing:
            break
        # generated per step, so a sweep that stops early never builds the bodies of the rates above
        sends = latency.schedule([segment_bodies(m, first, size) for m in meetings])
        first += size
        by_server = {}
        for name in climbing:
            url, proc = targets[name]
            db = databases.get(name, "")
            pg = await backend_pids(db) if db.startswith("postgresql://") else ()
            waited = await settle((proc.pid, *pg))
            cpu0 = cpu_seconds(proc.pid)
            by_server[name] = await latency.open_loop(name, url, token, receiver, sends, rate)
            by_server[name]["settle_seconds"] = round(waited, 1)
            # the server process only (not its database); includes the drain after the last send
            cpu = (cpu_seconds(proc.pid) - cpu0) / max(1, len(sends))
            by_server[name]["cpu_us_per_segment"] = round(cpu * 1e6) if cpu == cpu else None
            latency.print_phase(by_server[name])
        climbing = [n for n in climbing if not by_server[n]["past_knee"]]
        steps.append((rate, seconds, by_server))
    return steps


def _results(
    plan: Plan,
    rounds: dict[str, list[dict[str, Any]]],
    open_model: list[tuple[float, float, dict[str, dict[str, Any]]]],
    log_lines: dict[str, int],
    tmp: Path,
) -> dict[str, Any]:
    medians = {name: _median_round(rs) for name, rs in rounds.items()}
    proxy_med = medians["proxy"]
    gateways = {
        name: {
            "store": BACKENDS[name],
            "median": medians[name],
            "ratio": medians[name]["end_to_end_per_s"] / proxy_med["end_to_end_per_s"],
            "cpu_ratio": _median_cpu(rounds["proxy"], "proxy") / _median_cpu(rounds[name], name),
            "log_lines": log_lines[name],
            "complete": all(r["delivered"] == r["requests"] and not r["failures"] for r in rounds[name]),
        }
        for name in rounds
        if name != "proxy"
    }
    complete = all(
        r["delivered"] == r["requests"] and not r["failures"] for rs in rounds.values() for r in rs
    )
    # the issue-5 latency phases (below every knee) must deliver everything; sweep steps past a knee need not
    complete = complete and all(
        r["arrived"] == r["requests"] and not r["failures"]
        for rate, _, rs in open_model
        if rate in plan.rates
        for r in rs.values()
    )
    sqlite = gateways["gateway"]
    return {
        "clients": plan.clients,
        "rounds": plan.rounds,
        "gateway_log_level": plan.log_level,
        "gateway_log_lines": sqlite["log_lines"],
        "proxy": proxy_med,
        "gateway": sqlite["median"],
        "all_rounds": rounds,
        "ratio": sqlite["ratio"],
        "cpu_ratio": sqlite["cpu_ratio"],
        "target_ratio": TARGET_RATIO,
        "met": sqlite["ratio"] >= TARGET_RATIO,
        "gateways": gateways,
        "durable_target_ratio": DURABLE_TARGET_RATIO,
        "latency": _latency_results(plan, open_model),
        "sweep": _sweep_results(open_model),
        "postgres": plan.postgres,
        "profile": _gateway_profile(tmp / "gateway.prof") if plan.profile else None,
        "complete": complete,
    }


def _latency_results(
    plan: Plan, open_model: list[tuple[float, float, dict[str, dict[str, Any]]]]
) -> dict[str, Any] | None:
    """Issue 5's added-latency figures: the steps at ``plan.rates`` (as before the sweep existed)."""
    chosen = [(rate, phases) for rate, _, phases in open_model if rate in plan.rates and "proxy" in phases]
    if not chosen:
        return None
    return {
        "measure": "POST -> arrival at the receiver",
        "seconds_per_rate": plan.latency_seconds,
        "target_added_p99_ms": latency.TARGET_ADDED_P99_MS,
        "by_rate": [
            {
                "rate": rate,
                "segments": phases["proxy"]["requests"],
                "phases": phases,
                "added": {n: latency.added(r, phases["proxy"]) for n, r in phases.items() if n != "proxy"},
            }
            for rate, phases in chosen
        ],
    }


def _sweep_results(open_model: list[tuple[float, float, dict[str, dict[str, Any]]]]) -> dict[str, Any] | None:
    """Offered against delivered rate and added latency per server up to its knee (the open-model ladder)."""
    if not open_model:
        return None
    servers: dict[str, list[dict[str, Any]]] = {}
    for rate, seconds, phases in open_model:
        base = phases.get("proxy")
        for name, r in phases.items():
            point = {
                "rate": rate,
                "seconds": seconds,
                "sent_rate": r["achieved_rate"],
                "delivered_rate": r["delivered_rate"],
                "arrival_ms": r["arrival_ms"],
                "response_ms": r["response_ms"],
                "arrived": r["arrived"],
                "requests": r["requests"],
                "failures": r["failures"],
                "past_knee": r["past_knee"],
                "cpu_us_per_segment": r.get("cpu_us_per_segment"),
                # the pass-through at the same rate, while it still holds that rate
                "added_ms": latency.added(r, base)
                if base and name != "proxy" and not base["past_knee"]
                else None,
            }
            servers.setdefault(name, []).append(point)
    return {
        "measure": "POST -> arrival at the receiver",
        "knee_share": latency.KNEE_SHARE,
        "knee_p99_ms": latency.KNEE_P99_MS,
        "max_in_flight": latency.MAX_IN_FLIGHT,
        "servers": {
            name: {"points": points, "knee": _knee(points), "store": BACKENDS.get(name, "pass-through")}
            for name, points in servers.items()
        },
    }


def _knee(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest offered rate the server held, and the first it did not (None: it held every rate tried)."""
    held = [p["rate"] for p in points if not p["past_knee"]]
    broke = [p["rate"] for p in points if p["past_knee"]]
    return {"held": max(held) if held else None, "broke_at": min(broke) if broke else None}


def _gateway_profile(path: Path, top: int = 30) -> dict[str, str]:
    """The gateway process's cProfile over the measured gateway rounds, by own and by cumulative time."""
    out = {}
    for sort in ("tottime", "cumulative"):
        buffer = io.StringIO()
        pstats.Stats(str(path), stream=buffer).strip_dirs().sort_stats(sort).print_stats(top)
        text = buffer.getvalue()
        out[sort] = text[text.index("   ncalls") :] if "   ncalls" in text else text
    return out


def gateway_command(py: str) -> list[str]:
    """``consent-gateway serve`` as installed by ``make install``, else the same entry point from the tree."""
    script = Path(py).parent / "consent-gateway"
    return [str(script), "serve"] if script.exists() else [py, "-m", "gateway.cli", "serve"]


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(rounds, key=lambda r: r["end_to_end_per_s"])
    return ordered[len(ordered) // 2]


def _median_cpu(rounds: list[dict[str, Any]], role: str) -> float:
    """Median server CPU per segment over the rounds: what each segment cost the core it ran on."""
    known = [r["cpu_us_per_segment"][role] for r in rounds if r["cpu_us_per_segment"].get(role) is not None]
    return float(statistics.median(known)) if known else float("nan")


def _print_round(n: int, r: dict[str, Any]) -> None:
    per = r["cpu_us_per_segment"]
    cpu = ", ".join(f"{k} {v:.1f} s ({per[k]} µs/segment)" for k, v in r["cpu_seconds"].items())
    print(
        f"[ingest] round {n} {r['name']:<7}: {r['end_to_end_per_s']:>7,.0f} segments/s end to end "
        f"({r['answered_per_s']:,.0f} answered/s), p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
        f"delivered {r['delivered']}/{r['requests']}, failures {r['failures']}, "
        f"drain {r['drain_seconds']:.2f} s, CPU {cpu}"
    )


# -------------------------------------------------------------------------------- instruction counts


def callgrind(segments: int = 1000, clients: int = 32) -> dict[str, Any]:
    """Instructions each server executes per segment, counted by ``valgrind --tool=callgrind``.

    Wall-clock throughput on a small shared machine moves by ±15% from run to run; an instruction count
    of the same work does not. Each server runs under callgrind (about 50 times slower), the meetings are
    set up and warmed up as in the timed benchmark, the counters are zeroed, ``segments`` segments are
    sent, and once the receiver holds them all the counters are dumped. Instructions are not time (a cache
    miss costs no instruction), so this complements the timed figure rather than replacing it.
    """
    with tempfile.TemporaryDirectory(prefix="consent-gateway-callgrind-") as tmp:
        return asyncio.run(_callgrind(segments, clients, Path(tmp)))


async def _callgrind(segments: int, clients: int, tmp: Path) -> dict[str, Any]:
    meetings, _ = scripts(clients)
    per_client = max(1, segments // clients)
    warm = 10
    bodies = [segment_bodies(m, 0, warm + per_client) for m in meetings]
    token = secrets.token_urlsafe(24)
    out: dict[str, Any] = {"segments": per_client * clients, "clients": clients}
    with process([sys.executable, str(BENCH / "servers.py"), "receiver"], announces_port=True) as (_, rport):
        receiver = f"http://127.0.0.1:{rport}"
        policy = tmp / "bench-ingest.yaml"
        policy.write_text(POLICY.format(url=f"{receiver}/segments", delivery="stream"))
        for name in ("proxy", "gateway"):
            counts = tmp / f"{name}.callgrind"
            argv, env, port = _under_callgrind(name, counts, receiver, policy, token, tmp)
            with process(argv, env=env, log=tmp / f"{name}.log", announces_port=port is None) as (proc, got):
                base = f"http://127.0.0.1:{got or port}"
                if name == "gateway":
                    await _set_up(base, token, meetings)
                url = f"{base}/v1/events"
                await phase(f"{name} warm-up", url, token, receiver, {}, split(bodies, 0, warm), 600)
                _callgrind_control("--zero", proc.pid)
                result = await phase(name, url, token, receiver, {}, split(bodies, warm, per_client), 600)
                _callgrind_control("--dump=measured", proc.pid)
                per_segment = round(_dumped_instructions(tmp, counts.name) / result["requests"])
                out[name] = {"instructions_per_segment": per_segment, "delivered": result["delivered"]}
                print(f"[callgrind] {name}: {per_segment:,} instructions per segment")
    out["ratio"] = out["proxy"]["instructions_per_segment"] / out["gateway"]["instructions_per_segment"]
    print(f"[callgrind] instructions per segment, pass-through / gateway: {out['ratio']:.2f}")
    return out


def _under_callgrind(
    name: str, counts: Path, receiver: str, policy: Path, token: str, tmp: Path
) -> tuple[list[str], dict[str, str], int | None]:
    """argv and environment of a server under callgrind, and its port (None: it announces one)."""
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}", "--dump-instr=no"]
    py = sys.executable
    if name == "proxy":
        return (
            [*valgrind, py, str(BENCH / "servers.py"), "proxy", "--upstream", f"{receiver}/segments"],
            {**os.environ},
            None,
        )
    port = free_port()
    env = {
        **os.environ,
        "CONSENT_GATEWAY_HOST": "127.0.0.1",
        "CONSENT_GATEWAY_PORT": str(port),
        "CONSENT_GATEWAY_DATABASE": f"sqlite:///{tmp}/gateway.db",
        "CONSENT_GATEWAY_POLICIES": str(policy),
        "CONSENT_GATEWAY_INGEST_TOKEN": token,
        "PYTHONPATH": str(ROOT),
        "CONSENT_GATEWAY_LOG_FORMAT": "json",
        "CONSENT_GATEWAY_LOG_LEVEL": "info",
    }
    return [*valgrind, py, "-m", "gateway.cli", "serve"], env, port


async def _set_up(base: str, token: str, meetings: list[Script], ready_seconds: float = 600) -> None:
    """Wait for the gateway (slow to start under valgrind), then join everyone and record their consent."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        await wait_ready(http, f"{base}/readyz", seconds=ready_seconds)
        for m in meetings:
            for event in setup_events(m):
                async with http.post(f"{base}/v1/events", json=event) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"setup event {event['type']} got {resp.status}")


def _callgrind_control(command: str, pid: int) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True, timeout=600)  # noqa: S603, S607


def _dumped_instructions(folder: Path, name: str, seconds: float = 600) -> int:
    """The instruction total of the ``--dump=measured`` dump (callgrind writes it a moment later)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in folder.glob(f"{name}.*"):
            text = path.read_text(errors="replace")
            if "Trigger: dump measured" in text and "\nsummary:" in text:
                return int(text.split("\nsummary:", 1)[1].split()[0])
        time.sleep(0.2)
    raise RuntimeError("callgrind did not write the measured dump")


def run(
    *,
    quick: bool,
    clients: int = 32,
    requests: int | None = None,
    rounds: int | None = None,
    log_level: str = "info",
    profile: bool = False,
    postgres: str | None = None,
    rates: tuple[float, ...] = (50.0, 200.0),
    latency_seconds: float | None = None,
    sweep: tuple[float, ...] | None = None,
    sweep_seconds: float | None = None,
    batch_seconds: float | None = None,
) -> dict[str, Any]:
    requests = requests or (2_000 if quick else 8_000)
    skipped = postgres and postgres_unreachable(postgres)
    if skipped:
        print(f"[ingest] PostgreSQL gateway skipped: {skipped}")
    plan = Plan(
        clients,
        requests,
        warmup=max(clients * 10, requests // 10),
        rounds=rounds or (1 if quick else 3),
        log_level=log_level,
        profile=profile,
        postgres=None if skipped else postgres,
        rates=rates,
        latency_seconds=(3.0 if quick else 15.0) if latency_seconds is None else latency_seconds,
        sweep=(QUICK_SWEEP if quick else SWEEP) if sweep is None else sweep,
        sweep_seconds=(2.0 if quick else 5.0) if sweep_seconds is None else sweep_seconds,
        batch_seconds=batch_seconds,
    )
    stores = "SQLite" + ("" if plan.postgres is None else " and PostgreSQL")
    print(
        f"[ingest] {clients} clients, {plan.requests // clients * clients} requests per round, "
        f"{plan.rounds} round(s), gateways with the durable outbox on {stores}, destination "
        f"delivery: {plan.delivery().replace(chr(10) + '    ', ', ')}, gateway log level "
        f"{log_level}; then {plan.latency_seconds:.0f} s per server at each of "
        f"{', '.join(f'{r:.0f}/s' for r in rates)}, then {plan.sweep_seconds:.0f} s per step up "
        f"{', '.join(f'{r:.0f}' for r in plan.sweep)}/s until each server's knee; {cpu_words()}"
    )
    with tempfile.TemporaryDirectory(prefix="consent-gateway-bench-") as tmp:
        result = asyncio.run(_run(plan, Path(tmp)))
    if skipped:
        result["postgres_skipped"] = skipped
    _print_summary(result)
    return result


def postgres_unreachable(server: str) -> str | None:
    """Why no database can be created on ``server`` (None: it can), so a missing server skips, not fails."""

    async def check() -> None:
        conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
        await conn.close()

    try:
        asyncio.run(check())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{redacted_url(server)}: {type(exc).__name__}"
    return None


def _print_summary(result: dict[str, Any]) -> None:
    p = result["proxy"]
    print(
        f"[ingest] every segment reached the receiver: "
        f"{'yes' if result['complete'] else 'NO (INCOMPLETE: some segments missing or failed)'}"
    )
    for name, g in result["gateways"].items():
        m = g["median"]
        also = f", foundation >= {result['target_ratio']:.2f}" if name == "gateway" else ""
        print(
            f"[ingest] {name} ({g['store']}, durable outbox) {m['end_to_end_per_s']:,.0f}/s vs pass-through "
            f"{p['end_to_end_per_s']:,.0f}/s: ratio {g['ratio']:.2f} (issue 5 target >= "
            f"{result['durable_target_ratio']:.2f}{also}); "
            f"server CPU per segment {_median_cpu(result['all_rounds'][name], name):.0f} µs vs "
            f"{_median_cpu(result['all_rounds']['proxy'], 'proxy'):.0f} µs: CPU ratio {g['cpu_ratio']:.2f}"
        )
    lat = result["latency"]
    for step in lat["by_rate"] if lat else []:
        for name, a in step["added"].items():
            print(
                f"[latency] {name} added per segment ({lat['measure']}, {step['rate']:.0f}/s offered): "
                f"p50 {a['p50']:+.1f} ms, p99 {a['p99']:+.1f} ms "
                f"(target p99 < {lat['target_added_p99_ms']:.0f} ms)"
            )
    sweep = result.get("sweep") or {"servers": {}}
    for name, srv in sweep["servers"].items():
        knee = srv["knee"]
        held = f"{knee['held']:.0f}/s" if knee["held"] else "none of the rates tried"
        broke = (
            f", past it at {knee['broke_at']:.0f}/s"
            if knee["broke_at"]
            else " (no knee within the rates tried)"
        )
        print(f"[sweep] {name}: held {held}{broke}")
    if result["profile"]:
        print("[ingest] gateway process profile (cProfile, measured rounds only), by own time:")
        print(result["profile"]["tottime"])
        print("[ingest] by cumulative time:")
        print(result["profile"]["cumulative"])


if __name__ == "__main__":
    # ``python bench/ingest.py --callgrind [SEGMENTS]``: instruction counts only (bench/run.py runs the rest)
    if sys.argv[1:2] == ["--callgrind"]:
        callgrind(int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
    else:
        sys.exit("usage: python bench/ingest.py --callgrind [SEGMENTS]   (the timed benchmark: bench/run.py)")
