"""Policy hot reload and shadow mode, through the real server (and a real process for SIGHUP).

A broken policy reloaded while segments pour in keeps the old revision serving, and every segment posted has
its decision record. A shadow candidate logs only its differing decisions (``shadow=True``) and never changes
what is forwarded.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.model import Action
from gateway.reload import POLICIES
from gateway.shadow import Shadow
from gateway.web import health
from gateway.web.keys import GATEWAY
from tests.fakes.ai_service import FakeAIService
from tests.test_shutdown import served
from tests.web.harness import (
    SIGNING_SECRET,
    Dest,
    LiveGateway,
    consent,
    joined,
    policy_yaml,
    segment,
    serving,
    serving_policy,
    wait_for,
)

ADMIN = "reload-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with serving(tmp_path, admin_tokens=(SecretStr(ADMIN),)) as live:
        yield live


async def reload(gw: LiveGateway) -> tuple[int, dict[str, Any]]:
    async with gw.http.post(f"{gw.url}/admin/v1/policy/reload", headers=AUTH) as resp:
        return resp.status, await resp.json(content_type=None)


async def revision(gw: LiveGateway) -> str:
    async with gw.http.get(f"{gw.url}/admin/v1/policy", headers=AUTH) as resp:
        doc = await resp.json()
    return str(doc["policies"][0]["revision"])


async def test_broken_reload_under_load_keeps_old_revision_and_loses_no_decision(gw: LiveGateway) -> None:
    """Four clients post 40 segments each while a broken policy is reloaded again and again: every reload
    is refused, every post is accepted, every segment has a decision under the old revision."""
    await gw.send(joined("p-ada", "Ada"), consent("p-ada", "given"))
    old = await revision(gw)
    good = gw.policy_path.read_text()
    gw.policy_path.write_text(good.replace("window_seconds: 0", "window_seconds: -5"))
    refused: list[dict[str, Any]] = []

    async def client(n: int) -> list[int]:
        return [(await gw.post(segment(f"c{n}-s{i}", "p-ada", f"Line {i}."))).status for i in range(40)]

    async def reloader() -> None:
        for _ in range(10):
            status, doc = await reload(gw)
            assert status == 422
            refused.append(doc)
            await asyncio.sleep(0)

    *statuses, _ = await asyncio.gather(*(client(n) for n in range(4)), reloader())
    assert all(status == 200 for batch in statuses for status in batch)
    assert len(refused) == 10 and all("pending.window_seconds" in doc["detail"] for doc in refused)
    assert refused[0]["detail"].startswith(f"{gw.policy_path}:")
    decisions = await gw.decisions()
    segments = {f"c{n}-s{i}" for n in range(4) for i in range(40)}
    assert {d.segment_id for d in decisions} == segments
    assert len(decisions) == len(segments)
    assert {d.policy_revision for d in decisions} == {old}
    assert await revision(gw) == old
    async with gw.http.get(f"{gw.url}/metrics") as resp:
        assert 'gateway_policy_reloads_total{outcome="refused"} 10.0' in await resp.text()
    await gw.settle()
    assert len(gw.fake.segments()) == len(segments)


async def test_good_reload_under_load_switches_atomically(gw: LiveGateway) -> None:
    """A valid reload while segments are posted: each segment gets exactly one decision, under the old
    revision before the swap and the new one after, never a mix within one meeting's order."""
    await gw.send(joined("p-ada", "Ada"), consent("p-ada", "given"))
    old = await revision(gw)
    gw.policy_path.write_text(gw.policy_path.read_text() + "# revised\n")

    async def client() -> None:
        for i in range(60):
            assert (await gw.post(segment(f"s{i}", "p-ada", "Words."))).status == 200

    async def reloader() -> None:
        await wait_for(lambda: _has_decisions(gw, 10), "some decisions first")
        status, _ = await reload(gw)
        assert status == 200

    await asyncio.gather(client(), reloader())
    new = await revision(gw)
    revisions = [d.policy_revision for d in await gw.decisions()]
    assert len(revisions) == 60 and new != old
    switched = revisions.index(new)
    assert revisions[:switched] == [old] * switched and revisions[switched:] == [new] * (60 - switched)


async def _has_decisions(gw: LiveGateway, n: int) -> bool:
    return len(await gw.decisions()) >= n


async def test_reload_refuses_changed_destinations(gw: LiveGateway) -> None:
    """A policy whose destinations differ from the running ones is refused: delivery needs a restart."""
    text = gw.policy_path.read_text()
    gw.policy_path.write_text(text.replace("- id: summariser", "- id: renamed"))
    status, doc = await reload(gw)
    assert status == 422 and "restart" in doc["detail"]


async def test_reload_names_the_delivery_settings_that_would_change(gw: LiveGateway) -> None:
    """Batching (like timeouts and URLs) is fixed at start: the refusal names the setting, not its value."""
    text = gw.policy_path.read_text()
    assert "    delivery: stream\n" in text
    gw.policy_path.write_text(text.replace("    delivery: stream\n", "    delivery: batched\n", 1))
    status, doc = await reload(gw)
    assert status == 422
    assert "summariser.batch_max, summariser.batch_seconds differ" in doc["detail"]
    assert "http" not in doc["detail"]  # no URL, which may embed credentials


# --- shadow --------------------------------------------------------------------------------------------


def candidate(gw: LiveGateway, path: Path) -> Path:
    """The same policy, but its destination also needs ``training`` consent: stricter."""
    path.write_text(
        policy_yaml({"summariser": gw.fake.url}, [Dest("summariser", ("summary", "training"))], name="cand")
    )
    return path


async def test_shadow_logs_differences_without_changing_forwarding(gw: LiveGateway, tmp_path: Path) -> None:
    """With a stricter candidate in shadow, a summary-only consenter is still forwarded; the candidate's
    drop is logged with shadow=True and counted; agreeing decisions are not logged twice."""
    path = candidate(gw, tmp_path / "candidate.yaml")
    async with gw.http.post(
        f"{gw.url}/admin/v1/policy/shadow", headers=AUTH, json={"paths": [str(path)]}
    ) as resp:
        assert resp.status == 200
    await gw.send(
        joined("p-ada", "Ada"),
        joined("p-bob", "Bob"),
        consent("p-ada", "given"),
        consent("p-bob", "given", ("summary", "training")),
        segment("s1", "p-ada", "Only summaries for me."),
        segment("s2", "p-bob", "Anything goes."),
    )
    await gw.settle()
    assert sorted(p["segment_id"] for p in gw.fake.segments()) == ["s1", "s2"]
    decisions = await gw.decisions()
    real = [(d.segment_id, d.action) for d in decisions if not d.shadow]
    shadow = [(d.segment_id, d.action, d.reasons) for d in decisions if d.shadow]
    assert real == [("s1", Action.FORWARD), ("s2", Action.FORWARD)]
    assert shadow == [("s1", Action.DROP, ("consent_unknown",))]
    async with gw.http.get(f"{gw.url}/metrics") as resp:
        text = await resp.text()
    assert 'gateway_shadow_differences_total{active="forward",shadow="drop"} 1.0' in text
    async with gw.http.post(f"{gw.url}/admin/v1/policy/shadow", headers=AUTH, json={"paths": []}) as resp:
        assert resp.status == 200
    assert gw.app[GATEWAY].shadow is None


async def test_failing_shadow_never_affects_the_real_path(gw: LiveGateway, tmp_path: Path) -> None:
    """A shadow whose evaluation raises is logged and ignored: decisions and forwarding go on as before."""

    def explode(*_: object) -> None:
        raise RuntimeError("shadow observer broke")

    path = candidate(gw, tmp_path / "candidate.yaml")
    from gateway.policy.load import load_policy

    gw.app[GATEWAY].shadow = Shadow([load_policy(path)], on_difference=explode)
    await gw.send(joined("p-ada", "Ada"), consent("p-ada", "given"), segment("s1", "p-ada", "Hi."))
    await gw.settle()
    assert [p["segment_id"] for p in gw.fake.segments()] == ["s1"]
    assert [(d.action, d.shadow) for d in await gw.decisions()] == [(Action.FORWARD, False)]


async def test_shadow_policies_setting_starts_shadowing(tmp_path: Path) -> None:
    """The ``shadow_policies`` setting evaluates the candidate from the start."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        path = tmp_path / "candidate.yaml"
        path.write_text(policy_yaml({"summariser": fake.url}, [Dest("summariser", ("training",))], name="c"))
        async with serving(tmp_path, shadow_policies=(path,)) as gw:
            await gw.send(joined("p-ada", "Ada"), consent("p-ada", "given"), segment("s1", "p-ada", "Hi."))
            shadow = [d for d in await gw.decisions() if d.shadow]
    assert [(d.segment_id, d.action) for d in shadow] == [("s1", Action.DROP)]


# --- SIGHUP on a real process --------------------------------------------------------------------------


async def test_sighup_reloads_and_a_broken_file_keeps_the_old_revision(tmp_path: Path) -> None:
    """SIGHUP to ``consent-gateway serve`` reloads a good file; after a broken one the revision stays."""
    async with (
        FakeAIService(SIGNING_SECRET) as fake,
        served(tmp_path, fake, CONSENT_GATEWAY_ADMIN_TOKENS=ADMIN) as gw,
    ):

        async def status() -> dict[str, Any]:
            async with gw.http.get(f"{gw.url}/admin/v1/policy", headers=AUTH) as resp:
                assert resp.status == 200
                doc: dict[str, Any] = await resp.json()
                return doc

        first = (await status())["policies"][0]["revision"]
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy.read_text() + "# revised\n")
        gw.proc.send_signal(signal.SIGHUP)

        async def changed() -> bool:
            return bool((await status())["policies"][0]["revision"] != first)

        await wait_for(changed, "the SIGHUP reload")
        second = (await status())["policies"][0]["revision"]
        policy.write_text("policy: [broken\n")
        gw.proc.send_signal(signal.SIGHUP)

        async def failed() -> bool:
            last = (await status())["last_reload"]
            return last is not None and last["ok"] is False

        await wait_for(failed, "the failed reload to be reported")
        doc = await status()
        assert doc["policies"][0]["revision"] == second
        assert doc["last_reload"]["errors"][0].startswith(f"{policy}:")
        gw.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(gw.proc.wait(), 30)
        assert gw.proc.returncode == 0


async def test_a_withdrawal_while_no_policy_covers_the_meeting_holds_when_one_covers_it_again(
    gw: LiveGateway,
) -> None:
    """A reload narrows which meetings the policy covers, leaving this one out; Ada withdraws then (every
    channel can withdraw, whatever the policy). It is recorded and her queued words purged, so when a
    later reload covers the meeting again nothing more of hers leaves."""
    await gw.send(joined("p-ada", "Ada Lovelace"), consent("p-ada", "given"))
    original = gw.policy_path.read_text()
    gw.policy_path.write_text(original.replace("pending:", "applies_to: {meetings: [other-*]}\npending:"))
    assert (await reload(gw))[0] == 200
    reply = await gw.post(consent("p-ada", "withdrawn"))
    assert reply.status == 200 and reply.doc["results"][0]["status"] == "accepted"
    gw.policy_path.write_text(original)
    assert (await reload(gw))[0] == 200
    await gw.send(segment("s1", "p-ada", "After my withdrawal."))
    await gw.settle()
    assert gw.fake.received == []
    (_given, withdrawn) = [e.record for e in await gw.ledger()]
    assert (withdrawn.choice.value, withdrawn.outcome.value, withdrawn.policy_revision) == (
        "withdrawn",
        "accepted",
        "none",
    )


def _covering(name: str, meetings: str, dest: str, url: str) -> str:
    return (
        f"policy: {name}\napplies_to: {{meetings: ['{meetings}']}}\npurposes:\n"
        "  summary: {description: S., notice: N., notice_version: s-1}\npending: {window_seconds: 1}\n"
        f"destinations:\n  - {{id: {dest}, url: '{url}', purposes: [summary]}}\n"
    )


async def test_a_reload_that_moves_a_meeting_to_another_policy_keeps_withdrawals_and_holds_working(
    tmp_path: Path,
) -> None:
    """Policy ``team`` covers ``team-*`` and sends to ``x``; ``all`` covers the rest and sends to ``y``. Bo's
    segment is held for ``x`` when a reload moves ``team-1`` under ``all``. Ada then withdraws: it takes
    effect (her next words go nowhere), the hold for a destination the meeting no longer has is dropped with
    a decision, and the ticker lives on."""
    async with FakeAIService(SIGNING_SECRET) as fx, FakeAIService(SIGNING_SECRET) as fy:
        other = tmp_path / "all.yaml"
        other.write_text(_covering("all", "*", "y", fy.url))
        team = _covering("team", "team-*", "x", fx.url)
        async with serving_policy(tmp_path, team, fakes={"x": fx, "y": fy}, also=(other,)) as gw:
            meeting = "team-1"
            await gw.send(joined("ada", "Ada Lovelace", meeting), joined("bo", "Bo Nakamura", meeting))
            await gw.send(
                consent("ada", "given", meeting=meeting), segment("b1", "bo", "Held for x.", meeting)
            )
            gw.policy_path.write_text(_covering("team", "sales-*", "x", fx.url))
            assert gw.app[POLICIES].reload(gw.app[GATEWAY]).ok
            await gw.send(consent("ada", "withdrawn", meeting=meeting))
            await gw.send(segment("a2", "ada", "After I withdrew.", meeting))

            async def dropped() -> bool:
                return any(d.reasons == ("destination_removed",) for d in await gw.decisions())

            await wait_for(dropped, "the hold for x dropped")
            await gw.settle()
            assert not gw.app[health.TICKER].done()
            assert fy.received == [] and fx.received == []
            state = gw.app[GATEWAY].meeting("generic", meeting)
            assert state is not None and state.held == ()


async def test_a_hold_in_a_meeting_no_policy_covers_any_more_still_ends_with_its_window(
    tmp_path: Path,
) -> None:
    """A reload narrows ``applies_to`` while Bo's words are held: they can never be released, and they do
    not stay held for ever either: they are dropped when the window of the policy that held them ends, and
    the drop is logged as a decision."""
    async with serving(tmp_path, window=1, admin_tokens=(SecretStr(ADMIN),)) as gw:
        await gw.send(joined("p-bo", "Bo Nakamura"), segment("s1", "p-bo", "Held."))
        original = gw.policy_path.read_text()
        gw.policy_path.write_text(original.replace("pending:", "applies_to: {meetings: [other-*]}\npending:"))
        assert (await reload(gw))[0] == 200

        async def ended() -> bool:
            return [d.action for d in await gw.decisions() if d.segment_id == "s1"] == [
                Action.HOLD,
                Action.DROP,
            ]

        await wait_for(ended, "the hold to end with its window")
        state = gw.app[GATEWAY].meeting("generic", "m-weekly")
        assert state is not None and state.held == ()


async def test_a_reload_to_per_speaker_mode_releases_words_all_party_mode_held(tmp_path: Path) -> None:
    """All-party mode holds Ada's words while Bo has not decided; a reload to per-speaker mode releases
    them (Ada consented) without waiting for another event, and they are not lost at the window's end."""
    async with serving(tmp_path, window=60, mode="all_party", admin_tokens=(SecretStr(ADMIN),)) as gw:
        await gw.send(
            joined("p-ada", "Ada Lovelace"), joined("p-bo", "Bo Nakamura"), consent("p-ada", "given")
        )
        await gw.send(segment("s1", "p-ada", "Waiting for Bo."))
        assert gw.fake.received == []
        gw.policy_path.write_text(gw.policy_path.read_text().replace("mode: all_party", "mode: per_speaker"))
        assert (await reload(gw))[0] == 200
        await wait_for(lambda: _async_true(len(gw.fake.accepted()) == 1), "the held words released")
        assert [p["segment_id"] for p in gw.fake.segments()] == ["s1"]


async def _async_true(value: bool) -> bool:
    return value
