"""The OpenAI-compatible summariser destination against a fake chat-completions server and a fake summary
webhook, both on loopback: request shape, signed summary, failures mapped to retryable attempts, no text in
logs."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.delivery.http import CONSENT_CHANGED, Attempt
from gateway.delivery.items import DestinationConfig, Item, Part, body, idempotency_key
from gateway.delivery.retry import Verdict, classify
from gateway.delivery.summariser import transcript
from gateway.delivery.transports import Transports
from tests.fakes.ai_service import FakeAIService
from tests.fakes.openai_compat import FakeOpenAI
from tests.web.harness import (
    consent,
    event,
    joined,
    segment,
    serving_policy,
    wait_for,
)

SECRET = "whsec_" + base64.b64encode(b"summary webhook secret, 32 bytes").decode()
API_KEY = "sk-test-key"
PROMPT = "Summarise the meeting in three sentences."


def now() -> int:
    return int(time.time())


def payload(segment_id: str, participant: str, text: str, speaker: str | None, kind: str = "speech") -> Part:
    doc: dict[str, Any] = {
        "meeting_id": "m1",
        "segment_id": segment_id,
        "participant_id": participant,
        "kind": kind,
        "text": text,
    }
    if speaker is not None:
        doc["speaker"] = speaker
    return Part("m1", participant, segment_id, doc)


PARTS = (
    payload("s1", "p-ada", "Hello all, shall we start?", "Ada Lovelace"),
    payload("s2", "p-wen", "Yes. [participant 1] sent the figures.", "Wen"),
    payload("s3", "p-ada", "Thanks,\nthen we are done.", "Ada Lovelace"),
)
ITEM = Item("notes", "key-m1", "m1", "transcript", PARTS)


def transcript_body(parts: tuple[Part, ...] = PARTS) -> bytes:
    return body(ITEM, parts)


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(API_KEY) as fake:
        yield fake


@pytest.fixture
async def webhook() -> AsyncIterator[FakeAIService]:
    async with FakeAIService(SECRET) as fake:
        yield fake


@pytest.fixture
async def transports() -> AsyncIterator[Transports]:
    async with aiohttp.ClientSession() as session:
        owned = Transports(session)
        try:
            yield owned
        finally:
            await owned.close()


def config(openai: FakeOpenAI, webhook: FakeAIService, **settings: Any) -> DestinationConfig:
    values: dict[str, Any] = {"api_key": API_KEY, "completion_timeout": 5.0, **settings}
    return DestinationConfig(
        "notes",
        openai.base_url,
        SECRET,
        kind="openai_summary",
        model="gpt-test",
        prompt=PROMPT,
        summary_url=webhook.url,
        **values,
    )


async def summarise(
    transports: Transports, cfg: DestinationConfig, parts: tuple[Part, ...] = PARTS
) -> Attempt:
    return await transports.send(cfg, idempotency_key(ITEM, parts), transcript_body(parts), now())


async def test_a_transcript_becomes_a_signed_summary(transports, openai, webhook) -> None:
    """The completion gets the policy's model and prompt and 'Speaker: text' lines; the webhook gets the
    summary, signed (verified by the reference library) under the attempt's idempotency key."""
    attempt = await summarise(transports, config(openai, webhook))
    assert attempt == Attempt(status=200)
    (request,) = openai.requests
    assert request.model == "gpt-test"
    assert request.system == PROMPT
    assert request.user == (
        "Ada Lovelace: Hello all, shall we start?\n"
        "Wen: Yes. [participant 1] sent the figures.\n"
        "Ada Lovelace: Thanks, then we are done."
    )
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    (delivered,) = webhook.received
    assert delivered.ok and delivered.key == "key-m1"
    assert delivered.headers["webhook-id"] == "key-m1"
    assert delivered.body == {
        "type": "summary",
        "meeting_id": "m1",
        "summary": "3 lines.",
        "model": openai.answer_model,
        "segment_ids": ["s1", "s2", "s3"],
    }


def test_speakers_without_a_name_are_numbered_and_chat_is_marked() -> None:
    """With names left out by policy, speakers become 'Speaker N' by first appearance; chat says so."""
    parts = (
        payload("s1", "p-b", "First.", None),
        payload("s2", "p-a", "Second.", None, kind="chat"),
        payload("s3", "p-b", "Third.", "  "),
    )
    found = transcript(body(Item("notes", "k", "m1", "transcript", parts), parts))
    assert found is not None
    assert found.text == "Speaker 1: First.\nSpeaker 2 (chat): Second.\nSpeaker 1: Third."
    assert found.segment_ids == ("s1", "s2", "s3")
    assert "First" not in repr(found)


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (500, None), (503, "2")])
async def test_a_failed_completion_is_a_retryable_attempt(
    transports, openai, webhook, status, retry_after
) -> None:
    """429 and 5xx from the API come back as the attempt's status (with Retry-After); the retry delivers."""
    cfg = config(openai, webhook)
    openai.fail_next(1, status, retry_after)
    failed = await summarise(transports, cfg)
    assert failed == Attempt(status=status, retry_after=retry_after)
    assert classify(status) is Verdict.RETRY
    assert webhook.received == []
    assert await summarise(transports, cfg) == Attempt(status=200)
    assert len(openai.requests) == 2
    assert len(webhook.accepted()) == 1


async def test_a_wrong_api_key_is_final(transports, openai, webhook) -> None:
    """401 from the API is a final refusal: retrying with the same key cannot help."""
    attempt = await summarise(transports, config(openai, webhook, api_key="sk-wrong"))
    assert attempt.status == 401 and classify(401) is Verdict.REJECTED
    assert openai.refused == [401]
    assert webhook.received == []


async def test_a_failed_webhook_reuses_the_summary_on_retry(transports, openai, webhook) -> None:
    """The webhook's 503 is the attempt's outcome; the retry sends the same summary, no new completion."""
    cfg = config(openai, webhook)
    webhook.fail_next(2, 503)
    assert (await summarise(transports, cfg)).status == 503
    assert (await summarise(transports, cfg)).status == 503
    assert await summarise(transports, cfg) == Attempt(status=200)
    assert len(openai.requests) == 1
    assert len({r.raw for r in webhook.received}) == 1  # byte for byte the same summary each time


async def test_changed_content_gets_a_new_summary(transports, openai, webhook) -> None:
    """After a withdrawal removed parts, the retry summarises what is left, never the kept old summary."""
    cfg = config(openai, webhook)
    webhook.fail_next(1, 503)
    assert (await summarise(transports, cfg)).status == 503
    remaining = tuple(p for p in PARTS if p.participant_id != "p-wen")
    assert await summarise(transports, cfg, remaining) == Attempt(status=200)
    assert len(openai.requests) == 2
    assert "Wen" not in openai.requests[1].user
    (delivered,) = webhook.accepted()
    assert delivered.body["segment_ids"] == ["s1", "s3"]
    assert delivered.key == idempotency_key(ITEM, remaining) != ITEM.idempotency_key


async def test_a_purge_forgets_the_kept_summary(transports, openai, webhook) -> None:
    """After a withdrawal purge of the meeting, nothing derived from it is reused: a retry asks again."""
    cfg = config(openai, webhook)
    webhook.fail_next(1, 503)
    assert (await summarise(transports, cfg)).status == 503
    transports.forget("m1")
    assert await summarise(transports, cfg) == Attempt(status=200)
    assert len(openai.requests) == 2


async def test_an_answer_that_is_no_completion_is_retried_and_an_empty_one_is_final(
    transports, openai, webhook
) -> None:
    """A body that does not parse is retryable (a proxy's page); a completion with no text is final."""
    cfg = config(openai, webhook)
    openai.answer_next_raw(b"<html>bad gateway</html>")
    assert await summarise(transports, cfg) == Attempt(error="InvalidCompletion")
    empty = {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                        "finish_reason": "content_filter"}]}  # fmt: skip
    openai.answer_next_raw(json.dumps(empty).encode())
    refused = await summarise(transports, cfg)
    assert refused.status is not None and classify(refused.status) is Verdict.REJECTED
    assert webhook.received == []


async def test_a_hanging_api_times_out_as_a_network_error(transports, openai, webhook) -> None:
    """The completion has an explicit total timeout; running out of it is a retryable error."""
    openai.hang_next(1, 30)
    attempt = await summarise(transports, config(openai, webhook, completion_timeout=0.2))
    assert attempt.status is None and attempt.error is not None


async def test_a_body_that_is_no_transcript_is_final(transports, openai, webhook) -> None:
    """Only transcripts (or segments) can be summarised; anything else is refused without a request."""
    cfg = config(openai, webhook)
    attempt = await transports.send(cfg, "k", b'{"type": "other"}', now())
    assert attempt.status is not None and classify(attempt.status) is Verdict.REJECTED
    assert openai.requests == []


async def test_no_transcript_or_summary_text_reaches_the_logs(transports, openai, webhook) -> None:
    """Failures log the destination, statuses and class names only."""
    cfg = config(openai, webhook)
    with capture_logs() as logs:
        openai.fail_next(1, 500)
        await summarise(transports, cfg)
        openai.answer_next_raw(b"not json")
        await summarise(transports, cfg)
        empty = {"choices": [{"message": {"role": "assistant", "content": ""},
                              "finish_reason": "blocked input: Hello all, Ada Lovelace"}]}  # fmt: skip
        openai.answer_next_raw(json.dumps(empty).encode())
        await summarise(transports, cfg)
        webhook.fail_next(1, 503)
        await summarise(transports, cfg)
    assert {"delivery.summary_empty"} <= {entry["event"] for entry in logs}
    assert len(logs) >= 2
    text = repr(logs)
    assert all(word not in text for word in ("Hello all", "figures", "Ada Lovelace", "3 lines", PROMPT))


async def test_the_transcript_goes_to_the_model_only_if_still_allowed_at_its_first_byte(
    transports, openai, webhook
) -> None:
    """The model's provider receives the words too: a withdrawal between the dispatcher's check and the
    completion request's first byte (a slow connect to the provider) sends the model nothing, and the
    attempt is CONSENT_CHANGED (the dispatcher builds the transcript again at once)."""
    asked: list[int] = []

    def still() -> bool:
        asked.append(len(openai.requests))
        return False

    attempt = await transports.send(config(openai, webhook), "k1", transcript_body(), now(), still)
    assert attempt == Attempt(error=CONSENT_CHANGED)
    assert asked == [0] and openai.requests == [] and webhook.received == []


async def test_http_destinations_still_get_one_signed_post(transports, webhook) -> None:
    """Kind http is today's delivery: the body POSTed as is, signed, with its idempotency key."""
    cfg = DestinationConfig("plain", webhook.url, SECRET)
    assert await transports.send(cfg, "k-http", transcript_body(), now()) == Attempt(status=200)
    (delivered,) = webhook.received
    assert delivered.key == "k-http" and delivered.raw == transcript_body()


# --- through the real app ---------------------------------------------------------------------------------


def _policy(base_url: str, summary_url: str) -> str:
    return "\n".join([
        "policy: summaries",
        "purposes:",
        "  summary: {description: Summaries., notice: Sent to the summariser., notice_version: s-1}",
        "pending: {window_seconds: 0}",
        "destinations:",
        "  - id: notes",
        "    kind: openai_summary",
        "    delivery: meeting_end",
        "    purposes: [summary]",
        f"    base_url: {base_url}",
        "    model: gpt-test",
        f"    prompt: {PROMPT}",
        "    api_key_env: NOTES_API_KEY",
        f"    summary_url: {summary_url}",
        "    secret_env: NOTES_SECRET",
        "",
    ])  # fmt: skip


def _arrived(webhook: FakeAIService) -> Callable[[], Any]:
    async def check() -> bool:
        return bool(webhook.accepted())

    return check


async def test_the_gateway_summarises_only_consented_words(tmp_path, openai, webhook, monkeypatch) -> None:
    """End to end: at meeting end the API reads only the consenting speaker's lines, and the summary of
    them arrives signed at the webhook, after one 429 was retried."""
    monkeypatch.setenv("NOTES_API_KEY", API_KEY)
    monkeypatch.setenv("NOTES_SECRET", SECRET)
    async with serving_policy(tmp_path, _policy(openai.base_url, webhook.url)) as gw:
        await gw.send(joined("p-ada", "Ada"), joined("p-wen", "Wen"))
        await gw.send(consent("p-ada", "given"))
        await gw.send(segment("s1", "p-ada", "Ada speaks."), segment("s2", "p-wen", "Wen declined."))
        openai.fail_next(1, 429, "0")
        await gw.send(event("meeting.ended"))
        await wait_for(_arrived(webhook), "the summary")
        await gw.settle()
    assert [r.user for r in openai.requests] == ["Ada: Ada speaks."] * 2
    (delivered,) = webhook.accepted()
    assert delivered.body["segment_ids"] == ["s1"]
    assert "Wen declined" not in json.dumps([r.user for r in openai.requests])


async def test_a_summary_naming_someone_who_withdrew_while_the_model_wrote_is_written_again(
    tmp_path, openai, webhook, monkeypatch
) -> None:
    """Only Wen speaks, naming Ada; both consent. Ada withdraws while the model writes the summary of a
    transcript that names her: that summary is not posted. The transcript is built again without her
    name, and the summary of that one is what arrives."""
    monkeypatch.setenv("NOTES_API_KEY", API_KEY)
    monkeypatch.setenv("NOTES_SECRET", SECRET)
    async with serving_policy(tmp_path, _policy(openai.base_url, webhook.url)) as gw:
        await gw.send(joined("p-ada", "Ada Lovelace"), joined("p-wen", "Wen Zhou"))
        await gw.send(consent("p-ada", "given"), consent("p-wen", "given"))
        await gw.send(segment("s1", "p-wen", "Ada Lovelace owns the budget review."))
        openai.hang_next(1, 1.0)
        await gw.send(event("meeting.ended"))

        async def asked() -> bool:
            return len(openai.requests) == 1

        await wait_for(asked, "the completion request")
        await gw.send(consent("p-ada", "withdrawn"))
        await wait_for(_arrived(webhook), "the summary")
        await gw.settle()
    assert [r.user for r in openai.requests] == [
        "Wen Zhou: Ada Lovelace owns the budget review.",
        "Wen Zhou: [participant 1] owns the budget review.",
    ]
    assert len(webhook.accepted()) == 1


async def test_leaves_while_the_model_writes_change_no_name_and_ask_the_model_nothing_more(
    tmp_path, openai, webhook, monkeypatch
) -> None:
    """Guests leave while the model writes the summary: whose names are scrubbed did not change, so the
    summary goes as written; the transcript is sent to the model once."""
    monkeypatch.setenv("NOTES_API_KEY", API_KEY)
    monkeypatch.setenv("NOTES_SECRET", SECRET)
    async with serving_policy(tmp_path, _policy(openai.base_url, webhook.url)) as gw:
        await gw.send(
            joined("p-ada", "Ada Lovelace"), joined("p-g1", "Gus Guest"), joined("p-g2", "Gia Guest")
        )
        await gw.send(consent("p-ada", "given"), segment("s1", "p-ada", "Thanks Gus, the budget is done."))
        openai.hang_next(1, 0.6)
        await gw.send(event("meeting.ended"))

        async def asked() -> bool:
            return len(openai.requests) == 1

        await wait_for(asked, "the completion request")
        await gw.send(
            event("participant.left", participant_id="p-g1"), event("participant.left", participant_id="p-g2")
        )
        await wait_for(_arrived(webhook), "the summary")
        await gw.settle()
    assert [r.user for r in openai.requests] == ["Ada Lovelace: Thanks [participant 2], the budget is done."]


async def test_a_withdrawal_while_the_model_writes_stops_that_summary(
    tmp_path, openai, webhook, monkeypatch
) -> None:
    """The transcript of Ada and Wen is with the model (a slow completion) when Ada withdraws. The summary
    of her words must not be posted: it is dropped, and the next attempt summarises Wen's words alone."""
    monkeypatch.setenv("NOTES_API_KEY", API_KEY)
    monkeypatch.setenv("NOTES_SECRET", SECRET)
    async with serving_policy(tmp_path, _policy(openai.base_url, webhook.url)) as gw:
        await gw.send(joined("p-ada", "Ada"), joined("p-wen", "Wen"))
        await gw.send(consent("p-ada", "given"), consent("p-wen", "given"))
        await gw.send(segment("s1", "p-ada", "Ada speaks."), segment("s2", "p-wen", "Wen speaks."))
        openai.hang_next(1, 1.0)
        await gw.send(event("meeting.ended"))

        async def asked() -> bool:
            return len(openai.requests) == 1

        await wait_for(asked, "the completion request")
        await gw.send(consent("p-ada", "withdrawn"))
        await wait_for(_arrived(webhook), "the summary")
        await gw.settle()
    assert [r.user for r in openai.requests] == ["Ada: Ada speaks.\nWen: Wen speaks.", "Wen: Wen speaks."]
    (delivered,) = webhook.accepted()
    assert delivered.body["segment_ids"] == ["s2"]
