"""A real meeting from the shared corpus over Recall.ai's wire format forwards what the generic API does."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from aiohttp import web

from gateway.model import ConsentChoice
from gateway.platforms import recall
from gateway.platforms.config import RecallInstall
from tests.fakes.recall import BOT, RECORDING, RecallSender, participant, participant_event, transcript_data
from tests.platforms.corpus_meeting import DECLINER, content, generic_content, load
from tests.platforms.platform_gateway import consent, forwarded, platform_gateway

SECRET = "whsec_" + base64.b64encode(b"recall corpus secret, 32 bytes!!").decode()


def _setup(app: web.Application) -> None:
    recall.setup(app, [RecallInstall(id="c", webhook_secret_envs=("S",))], environ={"S": SECRET})


@pytest.mark.corpus
async def test_a_corpus_meeting_over_recall_forwards_what_the_generic_api_does(tmp_path: Path) -> None:
    """ES2002a as Recall joins, consents and ``transcript.data`` utterances (one speaker declining) forwards
    the same (speaker, kind, text) content as the generic-API replay of the same meeting."""
    meeting = load()
    expected = await generic_content(meeting)
    numbers = {label: 100 + n for n, label in enumerate(meeting.labels)}
    label_of = {f"{RECORDING}:{n}": label for label, n in numbers.items()}
    async with platform_gateway(tmp_path, _setup) as live:
        sender = RecallSender(live.url, SECRET, live.http)
        for label in meeting.labels:
            assert (
                await sender.post(participant_event("join", participant(numbers[label], label)))
            ).status == 200
        for label in meeting.labels:
            choice = ConsentChoice.REFUSED if label == DECLINER else ConsentChoice.GIVEN
            await consent(live, recall.PLATFORM, BOT, f"{RECORDING}:{numbers[label]}", choice)
        for n, (label, text) in enumerate(meeting.turns):
            who = participant(numbers[label], label) if label else None
            reply = await sender.post(transcript_data(who, text.split(), start=n * 10.0, step=0.01))
            assert reply.status == 200
        await live.settle()
        got = content(forwarded(live), label_of.__getitem__)
    assert sum(expected.values()) > 100 and got == expected
