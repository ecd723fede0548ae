"""``/metrics`` through the real server: counts of events, decisions, consent changes and deliveries, with
bounded labels only (no meeting or participant ids, no names, no text), and one registry per app."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.web.harness import MEETING, LiveGateway, consent, joined, segment, serving


async def scrape(gw: LiveGateway) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    async with gw.http.get(f"{gw.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_events_decisions_consent_and_delivery(tmp_path: Path) -> None:
    """After a short meeting the counters show what happened, labelled by type, action, reason and channel."""
    async with serving(tmp_path) as gw:
        await gw.send(
            joined("p-ada", "Ada Lovelace"),
            consent("p-ada", "given"),
            segment("s1", "p-ada", "Hello everyone."),
            segment("s2", "p-zed", "Unconsented words."),
        )
        await gw.settle()
        text, samples = await scrape(gw)
    assert value(samples, "gateway_events_total", type="SegmentReceived", platform="generic",
                 status="accepted") == 2  # fmt: skip
    assert value(samples, "gateway_events_total", type="ConsentSubmitted", platform="generic",
                 status="accepted") == 1  # fmt: skip
    assert value(samples, "gateway_decisions_total", action="forward", reason="consent_given") == 1
    assert value(samples, "gateway_decisions_total", action="drop", reason="consent_unknown") == 1
    assert (
        value(samples, "gateway_consent_changes_total", choice="given", outcome="accepted", channel="api")
        == 1
    )
    assert value(samples, "gateway_delivery_latency_seconds_count", destination="summariser",
                 status="delivered") == 1  # fmt: skip
    assert value(samples, "gateway_outbox_depth") == 0
    assert value(samples, "gateway_outbox_oldest_age_seconds") == 0
    for private in (MEETING, "p-ada", "p-zed", "Ada", "Hello", "Unconsented"):
        assert private not in text


async def test_each_app_counts_in_its_own_registry(tmp_path: Path) -> None:
    """Two gateways in one process do not share counters."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with serving(tmp_path / "a") as first, serving(tmp_path / "b") as second:
        await first.send(joined("p-ada", "Ada"))
        _, a = await scrape(first)
        _, b = await scrape(second)
    labels = {"type": "ParticipantJoined", "platform": "generic", "status": "accepted"}
    assert value(a, "gateway_events_total", **labels) == 1
    assert value(b, "gateway_events_total", **labels) == 0


async def test_refused_consent_with_an_odd_channel_stays_bounded(tmp_path: Path) -> None:
    """A consent naming a channel the policy does not know is counted under ``other``, not its own label."""
    async with serving(tmp_path) as gw:
        event = consent("p-ada", "given")
        event["channel"] = "carrier-pigeon"
        reply = await gw.post(event)
        assert reply.status == 403
        text, samples = await scrape(gw)
    assert "carrier-pigeon" not in text
    assert value(samples, "gateway_consent_changes_total", choice="given", outcome="rejected",
                 channel="other") == 1  # fmt: skip


async def test_a_reason_carrying_a_count_is_one_label(tmp_path: Path) -> None:
    """Scrubbing at send counts names in its reason (``names_scrubbed_at_send:2``); the metric labels it
    without the count, so the number of series does not grow with it."""
    from tests.web.harness import wait_for

    async with serving(tmp_path) as gw:
        await gw.send(joined("p-ada", "Ada Lovelace"), joined("p-wen", "Wen Li"), consent("p-ada", "given"))
        gw.fake.fail_next(1, 503, retry_after=1)
        await gw.send(consent("p-wen", "given"), segment("s1", "p-ada", "Wen Li and Wen agree."))

        async def attempted() -> bool:
            return len(gw.fake.received) == 1

        await wait_for(attempted, "the failed attempt")
        await gw.send(consent("p-wen", "withdrawn"))

        async def delivered() -> bool:
            return len(gw.fake.accepted()) == 1

        await wait_for(delivered, "the retry")

        async def counted() -> bool:  # the decision of a scrubbing at send is written in the background
            _, samples = await scrape(gw)
            return (
                value(samples, "gateway_decisions_total", action="redact", reason="names_scrubbed_at_send")
                == 1
            )

        await wait_for(counted, "the scrubbing at send counted")
        text, _ = await scrape(gw)
    assert "names_scrubbed_at_send" in text and "names_scrubbed_at_send:" not in text
