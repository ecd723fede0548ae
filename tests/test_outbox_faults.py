"""Fault tests of the durable outbox (issue 5): what is accepted is delivered, what is withdrawn never leaves.

Each test runs real gateways (in process on loopback, or as ``consent-gateway serve`` processes that are
killed with SIGKILL) against a fake AI service, and ends with the same verifier: every consented segment the
gateway acknowledged reached the destination (duplicates only under one idempotency key), and no segment of
anyone who did not consent, or who withdrew before it was said, ever arrived at all.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from gateway.sealing import new_key_spec
from gateway.store import open_store
from gateway.store.outbox import Lease
from tests.conftest import _require_all as require_all
from tests.conftest import postgres_database, require_postgres
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import (
    INGEST_TOKEN,
    SIGNING_SECRET,
    Dest,
    consent,
    joined,
    policy_yaml,
    segment,
    serving,
    wait_for,
)


@dataclass
class Verifier:
    """What was said and acknowledged, checked against what the destination received."""

    consented: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)

    def check(self, service: FakeAIService, *, forbidden_from: int = 0) -> None:
        """``forbidden_from``: the destination's request count when the forbidden segments became forbidden
        (a withdrawal acknowledged then); 0 when they never were allowed."""
        keys_of: dict[str, set[str | None]] = {}
        reached: set[str] = set()
        for request in service.received:
            if request.body is None:
                continue  # refused by the fake's signature check: never processed
            for payload in request.segment_payloads():
                keys_of.setdefault(str(payload["segment_id"]), set()).add(request.key)
                if request.seq >= forbidden_from:
                    reached.add(str(payload["segment_id"]))
        arrived = {p["segment_id"] for p in service.segments()}
        assert not (self.forbidden & reached), "a segment reached the destination without consent"
        assert self.consented <= arrived, f"consented segments lost: {sorted(self.consented - arrived)}"
        duplicated = {sid: keys for sid, keys in keys_of.items() if len(keys) > 1}
        assert not duplicated, f"a segment was sent under two idempotency keys: {duplicated}"


def _segments(prefix: str, who: str, count: int) -> list[dict[str, object]]:
    return [segment(f"{prefix}{n}", who, f"{who} says line {n}") for n in range(count)]


# --- in process: destination faults ----------------------------------------------------------------


async def test_destination_down_then_back_loses_nothing(tmp_path: Path) -> None:
    async with serving(tmp_path) as live:
        verifier = Verifier()
        live.fake.fail_next(7)  # down long enough to open the circuit and fail a probe
        await live.send(
            joined("ann", "Ann"), joined("bob", "Bob"), consent("ann", "given"), consent("bob", "refused")
        )
        for n in range(15):
            await live.send(segment(f"a{n}", "ann", "consented words"), segment(f"b{n}", "bob", "never"))
            verifier.consented.add(f"a{n}")
            verifier.forbidden.add(f"b{n}")
        await wait_for(lambda: _arrived(live.fake, verifier.consented), "every consented segment", 60)
        verifier.check(live.fake)

        async def recorded() -> bool:  # outcomes are recorded in a commit after the delivery itself
            return {row["status"] for row in await live.store.outbox_report()} == {"delivered"}

        await wait_for(recorded, "every outcome recorded")
        report = await live.store.outbox_report()
        assert {row["status"] for row in report} == {"delivered"}
        assert sum(int(row["sealed_parts"]) for row in report) == 0  # no text left at rest


async def test_429_with_retry_after_is_waited_out(tmp_path: Path) -> None:
    async with serving(tmp_path) as live:
        verifier = Verifier()
        live.fake.fail_next(3, status=429, retry_after=1)
        await live.send(joined("ann", "Ann"), consent("ann", "given"))
        for n in range(3):
            await live.send(segment(f"a{n}", "ann", "words"))
            verifier.consented.add(f"a{n}")
        await wait_for(lambda: _arrived(live.fake, verifier.consented), "delivery after 429s", 30)
        verifier.check(live.fake)
        assert [r.status for r in live.fake.received[:3]] == [429, 429, 429]


async def test_a_hanging_destination_costs_one_timeout_per_attempt_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, [Dest("summariser", timeout=0.5)]) as live:
        verifier = Verifier(consented={"a0", "a1"}, forbidden={"b0"})
        live.fake.hang_next(2, 30)  # answers nothing for far longer than the destination's timeout
        await live.send(joined("ann", "Ann"), joined("bob", "Bob"), consent("ann", "given"))
        await live.send(
            segment("a0", "ann", "words"), segment("b0", "bob", "never"), segment("a1", "ann", "w")
        )
        await wait_for(lambda: _arrived(live.fake, verifier.consented), "delivery past the hang", 30)
        verifier.check(live.fake)
        assert [r.status for r in live.fake.received[:2]] == [None, None]  # the two hung attempts


async def test_withdrawal_empties_the_outbox_while_the_destination_is_down(tmp_path: Path) -> None:
    async with serving(tmp_path) as live:
        live.fake.fail_next(10_000)
        await live.send(
            joined("ann", "Ann"), joined("cat", "Cat"), consent("ann", "given"), consent("cat", "given")
        )
        for n in range(5):
            await live.send(segment(f"a{n}", "ann", "words"), segment(f"c{n}", "cat", "words"))
        await live.send(consent("ann", "withdrawn"))
        acknowledged_at = len(live.fake.received)  # tried while consented, before this: allowed then
        ann = await live.store.outbox_parts(meeting_id="m-weekly", participant_id="ann")
        assert {row["state"] for row in ann} == {"withdrawn"} and not any(row["sealed"] for row in ann)
        live.fake.recover()
        verifier = Verifier(consented={f"c{n}" for n in range(5)}, forbidden={f"a{n}" for n in range(5)})
        await wait_for(lambda: _arrived(live.fake, verifier.consented), "the other speaker's words", 30)
        verifier.check(live.fake, forbidden_from=acknowledged_at)


async def _arrived(service: FakeAIService, wanted: Iterable[str]) -> bool:
    return set(wanted) <= {p["segment_id"] for p in service.segments()}


# --- separate processes: kill -9 -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    url: str
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@asynccontextmanager
async def gateway_process(
    tmp: Path,
    service_url: str,
    database: str,
    key: str,
    window: float = 0,
    dests: Sequence[Dest] = (Dest("summariser"),),
) -> AsyncIterator[Process]:
    """``consent-gateway serve`` in its own process, ready when this yields; killed (if alive) after.
    ``dests``: the policy's destinations, each reaching ``service_url``."""
    policy = tmp / "policy.yaml"
    urls = {dest.id: service_url for dest in dests}
    policy.write_text(policy_yaml(urls, dests, window=window))
    port = _free_port()
    env = {
        **os.environ,
        "CONSENT_GATEWAY_INGEST_TOKEN": INGEST_TOKEN,
        "CONSENT_GATEWAY_SIGNING_SECRET": SIGNING_SECRET,
        "CONSENT_GATEWAY_OUTBOX_KEYS": key,
        "CONSENT_GATEWAY_SECRETS_FILE": str(tmp / "secrets.json"),
        "CONSENT_GATEWAY_TICK_SECONDS": "0.05",
    }
    command = [str(Path(sys.executable).parent / "consent-gateway"), "serve", "--port", str(port)]
    command += ["--database", database, "--policy", str(policy), "--log-format", "json"]
    # starting a process does not block for long; the test waits on readiness below
    proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220, S603
    process = Process(f"http://127.0.0.1:{port}", proc)
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                assert proc.poll() is None, "gateway process exited"
                try:
                    async with http.get(process.url + "/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, "the gateway process to be ready", 30)
        yield process
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def _post(url: str, *events: dict[str, object]) -> None:
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        for item in events:
            async with http.post(url + "/v1/events", json=item, headers=headers) as response:
                assert response.status == 200, await response.text()


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    async with postgres_database() as url:
        yield url


async def test_kill_9_between_accept_and_delivery_loses_nothing(tmp_path: Path, database: str) -> None:
    """Acknowledged while the destination is down, the process killed: the next process delivers it all."""
    key = new_key_spec()
    verifier = Verifier()
    async with FakeAIService(SIGNING_SECRET) as service:
        service.fail_next(100_000)
        async with gateway_process(tmp_path, service.url, database, key) as first:
            await _post(first.url, joined("ann", "Ann"), joined("bob", "Bob"), consent("ann", "given"))
            for n in range(20):
                await _post(first.url, segment(f"a{n}", "ann", "words"), segment(f"b{n}", "bob", "never"))
                verifier.consented.add(f"a{n}")
                verifier.forbidden.add(f"b{n}")
            first.kill()
        service.recover()
        async with gateway_process(tmp_path, service.url, database, key):
            await wait_for(lambda: _arrived(service, verifier.consented), "recovered delivery", 60)
        verifier.check(service)


async def test_kill_9_while_segments_wait_for_consent_loses_none_of_them(tmp_path: Path) -> None:
    """Segments held for a pending consent, the process killed, the consent given to the next process: it
    recovers the holds at start and the consent releases them. (On PostgreSQL a killed replica's holds are
    taken over once their lease runs out, as its deliveries are: tests/test_replicas.py.)"""
    key, database = new_key_spec(), f"sqlite:///{tmp_path / 'gateway.db'}"
    verifier = Verifier()
    async with FakeAIService(SIGNING_SECRET) as service:
        async with gateway_process(tmp_path, service.url, database, key, window=60) as first:
            await _post(first.url, joined("ann", "Ann"), joined("bob", "Bob"))
            for n in range(10):
                await _post(first.url, segment(f"a{n}", "ann", "words"), segment(f"b{n}", "bob", "never"))
                verifier.consented.add(f"a{n}")
                verifier.forbidden.add(f"b{n}")
            first.kill()
        async with gateway_process(tmp_path, service.url, database, key, window=60) as second:
            await _post(second.url, consent("ann", "given"), consent("bob", "refused"))
            await wait_for(lambda: _arrived(service, verifier.consented), "the held segments released", 30)
        verifier.check(service)


async def test_kill_9_between_delivery_and_recording_it_sends_again_under_the_same_key(
    tmp_path: Path, database: str
) -> None:
    """The destination has the request but the gateway dies before recording the answer: the next process
    sends it again, under the same idempotency key, so the destination can tell it is a duplicate."""
    key = new_key_spec()
    verifier = Verifier(consented={"a0"})
    async with FakeAIService(SIGNING_SECRET) as service:
        service.hang_next(1, 60)
        async with gateway_process(tmp_path, service.url, database, key) as first:
            await _post(
                first.url, joined("ann", "Ann"), consent("ann", "given"), segment("a0", "ann", "words")
            )

            async def held() -> bool:
                return len(service.received) >= 1

            await wait_for(held, "the destination to hold the request", 20)
            first.kill()
        async with gateway_process(tmp_path, service.url, database, key):
            await wait_for(lambda: _arrived(service, verifier.consented), "the resend", 60)
        verifier.check(service)
        assert len({r.key for r in service.received}) == 1 and len(service.received) >= 2


# --- PostgreSQL restarted under load -----------------------------------------------------------------


def _pg_restart_command() -> list[str] | None:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or not Path("/etc/postgresql").is_dir():
        return None
    version = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


async def test_postgres_restart_under_load_fails_closed_and_recovers(tmp_path: Path) -> None:
    require_postgres()
    command = _pg_restart_command()
    if command is None:
        if require_all():
            pytest.fail("restarting PostgreSQL needs root and pg_ctlcluster here")
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster")
    async with postgres_database() as url, serving(tmp_path, database=url) as live:
        verifier = Verifier()
        await live.send(
            joined("ann", "Ann"), joined("bob", "Bob"), consent("ann", "given"), consent("bob", "refused")
        )
        readiness: list[int] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                try:
                    async with live.http.get(live.url + "/readyz") as response:
                        readiness.append(response.status)
                except aiohttp.ClientError:
                    readiness.append(0)
                await asyncio.sleep(0.01)

        async def load() -> None:
            n = 0
            while not stop.is_set():
                for sid, who in ((f"a{n}", "ann"), (f"b{n}", "bob")):
                    reply = await live.post(segment(sid, who, "words"))
                    if reply.status == 200 and who == "ann":
                        verifier.consented.add(sid)  # acknowledged: must arrive
                    verifier.forbidden.update({sid} if who == "bob" else set())
                n += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(probe()), asyncio.create_task(load())]
        await asyncio.sleep(0.5)
        restarted = await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=60)
        assert restarted.returncode == 0, restarted.stderr[-500:]

        async def recovered() -> bool:
            return len(readiness) > 5 and readiness[-5:] == [200] * 5

        await wait_for(recovered, "readiness to return by itself", 60)
        await asyncio.sleep(0.5)  # some load after recovery too
        stop.set()
        await asyncio.gather(*tasks)
        assert any(status != 200 for status in readiness), "readiness never reported the outage"
        await wait_for(lambda: _arrived(live.fake, verifier.consented), "every acknowledged segment", 60)
        verifier.check(live.fake)


# --- deletion requests -------------------------------------------------------------------------------


async def test_withdrawal_sends_a_deletion_request_for_what_was_delivered(tmp_path: Path) -> None:
    """A destination with an erasure endpoint gets one signed request listing the withdrawn participant's
    delivered segments and keys (retried through failures); the decision log cites the withdrawal."""
    async with serving(tmp_path, [Dest("summariser", erasure=True)]) as live:
        await live.send(
            joined("ann", "Ann"), joined("cat", "Cat"), consent("ann", "given"), consent("cat", "given")
        )
        await live.send(
            segment("a0", "ann", "words"), segment("a1", "ann", "words"), segment("c0", "cat", "words")
        )
        await wait_for(lambda: _arrived(live.fake, {"a0", "a1", "c0"}), "first deliveries")
        delivered_keys = {
            r.key for r in live.fake.accepted() if r.segment_payloads()[0]["participant_id"] == "ann"
        }
        live.fake.fail_next(2)  # the deletion request is retried like any delivery
        replies = await live.send(consent("ann", "withdrawn"))
        record_id = replies[0]["record_id"]

        def erasures() -> list[dict[str, object]]:
            return [r.body for r in live.fake.received if r.ok and r.body.get("type") == "erasure"]

        async def requested() -> bool:
            return bool(erasures())

        await wait_for(requested, "the deletion request", 30)
        (request,) = erasures()
        assert request["participant_id"] == "ann" and request["consent_record_id"] == record_id
        assert request["segment_ids"] == ["a0", "a1"]
        assert set(request["idempotency_keys"]) == delivered_keys
        logged = [d for d in await live.decisions() if d.action == "erase"]
        assert sorted(d.segment_id for d in logged) == ["a0", "a1"]
        assert all(d.consent_record_ids == (record_id,) and d.participant_id == "ann" for d in logged)


async def test_a_deletion_request_lists_segment_ids_as_the_platform_sent_them(tmp_path: Path) -> None:
    """An id the store keeps escaped (backslashes) is listed, and logged as erased, as it was sent."""
    sid = "rec\\2025\\seg-1"
    async with serving(tmp_path, [Dest("summariser", erasure=True)]) as live:
        await live.send(joined("ann", "Ann"), consent("ann", "given"), segment(sid, "ann", "words"))
        await wait_for(lambda: _arrived(live.fake, {sid}), "the delivery")
        await live.settle()
        await live.send(consent("ann", "withdrawn"))
        await wait_for(lambda: _erasure_arrived(live.fake), "the deletion request", 20)
        [request] = _erasures(live.fake)
        assert request["segment_ids"] == [sid]
        assert [d.segment_id for d in await live.decisions() if d.action == "erase"] == [sid]


async def test_a_deletion_request_lists_a_segment_whose_attempt_timed_out(tmp_path: Path) -> None:
    """An attempt that timed out after its body went out may have arrived (here it did, its 200 too late for
    the gateway): the deletion request after a withdrawal lists it all the same."""
    async with serving(tmp_path, [Dest("summariser", erasure=True, timeout=1)]) as live:
        await live.send(joined("ann", "Ann"), consent("ann", "given"))
        live.fake.delay_next(1, 2.5)  # received at once, answered after the gateway gave up on it
        live.fake.fail_next(10_000)  # and every retry meets an outage
        await live.send(segment("a0", "ann", "ann's words"))

        async def accepted() -> bool:
            return any(
                p["segment_id"] == "a0" for r in live.fake.received if r.ok for p in r.segment_payloads()
            )

        await wait_for(accepted, "the destination to accept a0", 10)
        await live.send(consent("ann", "withdrawn"))
        live.fake.recover()
        await wait_for(lambda: _erasure_arrived(live.fake), "the deletion request", 20)
        [request] = _erasures(live.fake)
        assert request["segment_ids"] == ["a0"]
        parts = await live.store.outbox_parts(meeting_id="m-weekly", participant_id="ann")
        [a0] = [p for p in parts if p["segment_id"] == "a0"]
        assert a0["state"] == "withdrawn" and a0["attempted_at"] is not None  # never a 2xx here


async def test_kill_9_after_a_withdrawal_is_acknowledged_loses_no_deletion_request(
    tmp_path: Path, database: str
) -> None:
    """Killed after acknowledging a withdrawal, before staging its deletion request (an attempt carrying the
    participant's words still on the wire): a later process sends it, listing that attempt's segment too,
    and nothing stays owed. (On PostgreSQL, once the dead process's lease on it has run out.)"""
    key = new_key_spec()
    dests = [Dest("summariser", erasure=True, timeout=10)]
    async with FakeAIService(SIGNING_SECRET) as service:
        async with gateway_process(tmp_path, service.url, database, key, dests=dests) as first:
            await _post(first.url, joined("ann", "Ann"), consent("ann", "given"), segment("a0", "ann", "w"))
            await wait_for(lambda: _arrived(service, {"a0"}), "a0 delivered", 20)
            service.delay_next(1, 8)  # the request carrying a1 stays on the wire
            await _post(first.url, segment("a1", "ann", "more words"))

            async def on_the_wire() -> bool:
                return service.in_flight == 1

            await wait_for(on_the_wire, "a1 on the wire", 20)
            await _post(first.url, consent("ann", "withdrawn"))  # acknowledged: the request is owed now
            first.kill()  # while it waits for a1's attempt to end before listing what to erase
        assert not [r for r in service.received if r.body and r.body.get("type") == "erasure"]
        async with gateway_process(tmp_path, service.url, database, key, dests=dests):
            await wait_for(lambda: _erasure_arrived(service), "the deletion request", 60)
        [request] = _erasures(service)
        assert request["participant_id"] == "ann" and request["segment_ids"] == ["a0", "a1"]
    store = open_store(database)
    await store.open()
    try:
        assert await store.claim_erasures(Lease("check", 0.0), float("inf"), 10) == []
    finally:
        await store.close()


def _erasures(service: FakeAIService) -> list[dict[str, object]]:
    return [r.body for r in service.received if r.ok and r.body.get("type") == "erasure"]


async def _erasure_arrived(service: FakeAIService) -> bool:
    return bool(_erasures(service))
