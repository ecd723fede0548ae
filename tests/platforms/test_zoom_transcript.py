"""Zoom recorded transcripts: the VTT is downloaded with the token, parsed, and attributed by the roster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from structlog.testing import capture_logs

from gateway import meeting, runtime
from gateway.meeting import MeetingState
from gateway.model import ConsentChoice, Participant
from gateway.platforms import vtt
from gateway.platforms.zoom_transcript import VOICE_PREFIX, one_per_person, speaker_label, unknown_voices
from gateway.sealing import new_key_spec
from gateway.web.keys import GATEWAY
from tests.conftest import require_shared
from tests.fakes.zoom import chat_event, participant_event, transcript_completed
from tests.platforms.test_zoom_webhook import consent_requests
from tests.platforms.zoom_support import UUID, ZoomRig, fixture, fixture_text, texts, zoom_gateway
from tests.strategies import consent_record
from tests.test_transcript_batches import transcripts
from tests.web.harness import Dest, wait_for

TOKEN = "dl-token-3f9a"
ROSTER = [
    ("16778241", "Gwen Ap Rhys: Ops"),
    ("16778242", "Tomás Ó Briain"),
    ("16778243", "Sam Lee"),
    ("16778244", "Sam Lee"),
]


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ZoomRig]:
    async with zoom_gateway(tmp_path, monkeypatch) as rig:
        yield rig


async def _meeting_with_consent(rig: ZoomRig) -> None:
    """Everyone joins and gives consent with a Zoom chat command."""
    await rig.accept(fixture("meeting.started.json"))
    for user_id, name in ROSTER:
        await rig.accept(participant_event("meeting.participant_joined", UUID, user_id, name))
        await rig.accept(chat_event(UUID, user_id, f"c-{user_id}", "/consent summary"))


async def _downloaded(rig: ZoomRig, n: int = 1) -> None:
    async def done() -> bool:
        return len(rig.zoom.downloads) >= n and not rig.service.tasks

    await wait_for(done, "the transcript download to finish")


async def test_transcript_is_attributed_by_unique_roster_names(rig: ZoomRig) -> None:
    """Prefixes naming one participant are attributed (colons in names too); shared, unknown or absent
    speaker names are unattributed and so not forwarded."""
    await _meeting_with_consent(rig)
    url = rig.zoom.add_transcript("t1", fixture_text("transcript.vtt"), TOKEN)
    await rig.accept(fixture("recording.transcript_completed.json", TIMESTAMP=1795855000000,
                             TEST_TRANSCRIPT_URL=url, TEST_TRANSCRIPT_BEARER=TOKEN))  # fmt: skip
    await _downloaded(rig)
    await rig.gw.settle()
    assert rig.zoom.downloads == [("t1", 200)]  # the CC file is not fetched
    assert texts(rig.gw) == [
        ("16778241", "speech", "Morning all, let's start with the release."),
        ("16778242", "speech", "Thanks Gwen. The build is green since Tuesday."),
    ]
    segment_ids = {d.segment_id for d in await rig.gw.decisions() if "/vtt/" in d.segment_id}
    assert segment_ids == {f"{UUID}/vtt/0c7e1d2a-tr01/{n}" for n in range(1, 6)}
    reasons = {d.segment_id: d.reasons for d in await rig.gw.decisions()}
    for n in (3, 4, 5):
        assert any("unattributed" in r for r in reasons[f"{UUID}/vtt/0c7e1d2a-tr01/{n}"]), n


async def test_a_name_that_loses_its_markup_never_credits_its_words_to_another(rig: ZoomRig) -> None:
    """Bob consents and "Bob<Ops>" refuses. Zoom writes the refuser's name as typed, "Bob<Ops>: ", which
    without its markup reads "Bob: ": the cue is unattributed (not forwarded as Bob's), and an escaped
    "Bob&lt;Ops&gt;: " is the refuser's; Bob's own cue still goes."""
    await rig.accept(fixture("meeting.started.json"))
    for user_id, name, command in (
        ("16778261", "Bob", "/consent summary"),
        ("16778262", "Bob<Ops>", "/optout"),
    ):
        await rig.accept(participant_event("meeting.participant_joined", UUID, user_id, name))
        await rig.accept(chat_event(UUID, user_id, f"c-{user_id}", command))
    doc = (
        "WEBVTT\n\n1\n00:00:01.000 --> 00:00:03.000\nBob<Ops>: ZQXSECRET refuser's words\n\n"
        "2\n00:00:04.000 --> 00:00:05.000\nBob&lt;Ops&gt;: ZQXSECRET again\n\n"
        "3\n00:00:06.000 --> 00:00:07.000\nBob: my own words\n"
    )
    await rig.accept(transcript_completed(UUID, rig.zoom.add_transcript("t1", doc, TOKEN), TOKEN))
    await _downloaded(rig)
    await rig.gw.settle()
    assert texts(rig.gw) == [("16778261", "speech", "my own words")]
    decided = {d.segment_id.rsplit("/", 1)[1]: d for d in await rig.gw.decisions() if "/vtt/" in d.segment_id}
    assert any("unattributed" in r for r in decided["1"].reasons)
    assert decided["2"].participant_id == "16778262"


def test_a_speaker_whose_name_lost_its_markup_joins_as_written() -> None:
    """ "Bob<Ops>", whose join was missed, speaks where only Bob is known: the cue is nobody's, and the name
    as written joins the roster as a voice (asking nobody), so it is scrubbed from others' words."""
    cues = vtt.parse("WEBVTT\n\n1\n00:00:01.000 --> 00:00:02.000\nBob<Ops>: hi\n")
    roster = {"16778261": Participant("16778261", "Bob")}
    assert vtt.speaker(roster, cues[0]) == (None, "Bob: hi")
    joins = unknown_voices(cues, roster, "zoom", UUID, datetime.now(UTC))
    assert [(j.participant_id.startswith(VOICE_PREFIX), j.name) for j in joins] == [(True, "Bob<Ops>")]


async def test_transcript_logs_carry_ids_and_counts_never_words(rig: ZoomRig) -> None:
    """Invariant 6 on the recorded-transcript path: an applied transcript and one that cannot be parsed
    are both logged, and neither log line holds a word of them."""
    await _meeting_with_consent(rig)
    good = fixture_text("transcript.vtt")
    bad = "Sam Lee: the merger closes on Friday, keep it quiet"
    with capture_logs() as logs:
        for n, (name, text) in enumerate((("t1", good), ("t2", bad)), start=1):
            url = rig.zoom.add_transcript(name, text, TOKEN)
            await rig.accept(transcript_completed(UUID, url, TOKEN, ts=1795855000000 + n))
            await _downloaded(rig, n)
        await rig.gw.settle()
    events = {entry["event"] for entry in logs}
    assert {"zoom.transcript.applied", "zoom.transcript.failed"} <= events
    words = [cue.text for cue in vtt.parse(good)] + [bad]
    assert texts(rig.gw), "the good transcript was forwarded, so its words were in the gateway"
    assert not [w for w in words if w in repr(logs)]


async def test_wrong_download_token_forwards_nothing(rig: ZoomRig) -> None:
    """The fake refuses a wrong token (401); the gateway gives up without retrying and forwards nothing."""
    await _meeting_with_consent(rig)
    url = rig.zoom.add_transcript("t1", fixture_text("transcript.vtt"), TOKEN)
    await rig.accept(transcript_completed(UUID, url, "not-the-token"))
    await _downloaded(rig)
    assert rig.zoom.downloads == [("t1", 401)]
    await rig.gw.settle()
    assert texts(rig.gw) == []


async def test_transient_failures_are_retried(rig: ZoomRig) -> None:
    """A 503 from the download server is retried and the transcript then applied."""
    await _meeting_with_consent(rig)
    url = rig.zoom.add_transcript("t1", fixture_text("transcript.vtt"), TOKEN)
    rig.zoom.fail_next = 2
    await rig.accept(transcript_completed(UUID, url, TOKEN))
    await _downloaded(rig, 3)
    assert [status for _, status in rig.zoom.downloads] == [503, 503, 200]
    await rig.gw.settle()
    assert len(texts(rig.gw)) == 2


async def test_download_url_outside_the_download_base_is_never_fetched(rig: ZoomRig) -> None:
    """A download_url on another host never receives the token: no request is made at all."""
    await _meeting_with_consent(rig)
    rig.zoom.add_transcript("t1", fixture_text("transcript.vtt"), TOKEN)
    evil = rig.zoom.url.replace("127.0.0.1", "localhost") + "/rec/download/t1"
    await rig.accept(transcript_completed(UUID, evil, TOKEN))
    await _downloaded(rig, 0)
    assert rig.zoom.downloads == []
    assert texts(rig.gw) == []


async def test_redelivered_transcript_event_downloads_once(rig: ZoomRig) -> None:
    """Zoom's retry of recording.transcript_completed is a duplicate: one download, one set of segments."""
    await _meeting_with_consent(rig)
    url = rig.zoom.add_transcript("t1", fixture_text("transcript.vtt"), TOKEN)
    doc = transcript_completed(UUID, url, TOKEN, ts=1795855000000)
    await rig.accept(doc)
    assert (await rig.send(doc)).doc == {"status": "duplicate"}
    await _downloaded(rig)
    await rig.gw.settle()
    assert len(rig.zoom.downloads) == 1 and len(texts(rig.gw)) == 2


def _with_files(uuid: str, ts: int, files: list[tuple[str | None, str]]) -> dict[str, Any]:
    """A ``recording.transcript_completed`` listing a TRANSCRIPT file for each (file id, download url);
    a None id leaves ``id`` out."""
    doc = transcript_completed(uuid, files[0][1], TOKEN, ts=ts)
    template = doc["payload"]["object"]["recording_files"][1]
    doc["payload"]["object"]["recording_files"][1:] = [
        {k: v for k, v in {**template, "id": file_id, "download_url": url}.items() if v is not None}
        for file_id, url in files
    ]
    return doc


@pytest.mark.parametrize("file_ids", [("f-tr1", "f-tr2"), (None, None)], ids=["zoom-ids", "no-ids"])
async def test_each_transcript_file_of_a_meeting_is_forwarded_once(
    rig: ZoomRig, file_ids: tuple[str | None, str | None]
) -> None:
    """A recording stopped and restarted gives two transcript files, each numbering its cues from 1: both
    are forwarded (segment ids carry the file: Zoom's id, or a hash of the download URL without one), and a
    later event delivering the first file again forwards nothing more."""
    await _meeting_with_consent(rig)
    cue = "WEBVTT\n\n1\n00:00:01.000 --> 00:00:03.000\nTomás Ó Briain: {} recording words\n"
    first = rig.zoom.add_transcript("t1", cue.format("first"), TOKEN)
    second = rig.zoom.add_transcript("t2", cue.format("second"), TOKEN)
    await rig.accept(_with_files(UUID, 1795855000001, [(file_ids[0], first), (file_ids[1], second)]))
    await _downloaded(rig, 2)
    await rig.accept(_with_files(UUID, 1795855000002, [(file_ids[0], first)]))
    await _downloaded(rig, 3)
    await rig.gw.settle()
    assert texts(rig.gw) == [
        ("16778242", "speech", "first recording words"),
        ("16778242", "speech", "second recording words"),
    ]
    ids = sorted({d.segment_id for d in await rig.gw.decisions() if "/vtt/" in d.segment_id})
    assert len(ids) == 2 and all(i.startswith(f"{UUID}/vtt/") and i.endswith("/1") for i in ids)
    if file_ids[0] is not None:
        assert ids == [f"{UUID}/vtt/f-tr1/1", f"{UUID}/vtt/f-tr2/1"]
    else:
        assert all(i.startswith(f"{UUID}/vtt/u") for i in ids)


async def test_missing_download_token_is_400(rig: ZoomRig) -> None:
    """A transcript event without a download_token is a schema violation naming it."""
    doc = transcript_completed(UUID, "http://x/y", TOKEN)
    del doc["download_token"]
    reply = await rig.send(doc)
    assert reply.status == 400 and reply.doc["detail"].startswith("download_token")


async def test_shared_documented_transcript_event_is_accepted(rig: ZoomRig) -> None:
    """Zoom's documented recording.transcript_completed (numeric object.id) drives a download."""
    template = require_shared("fixtures/platforms/zoom") / "recording.transcript_completed.template.txt"
    url = rig.zoom.add_transcript("doc", "WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.000\nHi.\n", TOKEN)
    doc = fixture(template.name, template.parent, TIMESTAMP=1795855000001, TEST_TRANSCRIPT_URL=url,
                  TEST_TRANSCRIPT_BEARER=TOKEN)  # fmt: skip
    await rig.accept(doc)
    await _downloaded(rig)
    assert rig.zoom.downloads == [("doc", 200)]


async def test_transcript_after_the_core_forgot_the_meeting_is_still_attributed_and_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transcript completing after the core forgot the ended meeting is attributed by the remembered
    joins, a decliner's name is scrubbed from others' words, and a meeting-end destination gets it."""
    dests = (Dest("summariser"), Dest("archive", delivery="meeting_end"))
    async with zoom_gateway(tmp_path, monkeypatch, dests) as rig:
        await rig.accept(fixture("meeting.started.json"))
        for user_id, name in ROSTER[:2]:
            await rig.accept(participant_event("meeting.participant_joined", UUID, user_id, name))
        await rig.accept(chat_event(UUID, "16778242", "c-1", "/consent summary"))
        await rig.accept(chat_event(UUID, "16778241", "c-2", "/optout"))
        await rig.accept(fixture("meeting.ended.json"))
        gateway = rig.gw.app[GATEWAY]
        await gateway.tick(datetime.now(UTC) + timedelta(minutes=11))
        assert gateway.meeting("zoom", UUID) is None
        vtt = "WEBVTT\n\n1\n00:00:01.000 --> 00:00:02.000\nTomás Ó Briain: Thanks Gwen Ap Rhys: Ops.\n"
        url = rig.zoom.add_transcript("late", vtt, TOKEN)
        await rig.accept(transcript_completed(UUID, url, TOKEN))
        await _downloaded(rig)
        await rig.gw.settle()
        for dest in ("summariser", "archive"):
            rows = texts(rig.gw, dest)
            assert [(pid, kind) for pid, kind, _ in rows] == [("16778242", "speech")], dest
            assert "Gwen" not in rows[0][2], dest


async def test_a_late_transcript_after_a_restart_scrubs_who_joined_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob joins and never consents; the gateway restarts mid-meeting; Alice joins and consents; the meeting
    ends and is forgotten; then the recorded transcript arrives, Alice naming Bob. The roster brought back
    for it is the gateway's (read back from the store after the restart), not only the joins this process's
    webhooks saw: Bob's name and address are scrubbed."""
    keys = (SecretStr(new_key_spec()),)
    async with zoom_gateway(tmp_path, monkeypatch, outbox_keys=keys) as first:
        await first.accept(fixture("meeting.started.json"))
        await first.accept(participant_event("meeting.participant_joined", UUID, "16778250", "Bob Nakamura",
                                             email="bob.nakamura@example.org"))  # fmt: skip
    async with zoom_gateway(tmp_path, monkeypatch, outbox_keys=keys, database=first.gw.database) as rig:
        await rig.accept(participant_event("meeting.participant_joined", UUID, "16778251", "Alice Moreau"))
        await rig.accept(chat_event(UUID, "16778251", "c-1", "/consent summary"))
        await rig.accept(fixture("meeting.ended.json"))
        gateway = rig.gw.app[GATEWAY]
        await gateway.tick(datetime.now(UTC) + timedelta(minutes=11))  # ended meetings are forgotten
        assert gateway.meeting("zoom", UUID) is None
        cue = "Alice Moreau: Bob Nakamura will send the numbers, mail bob.nakamura@example.org."
        url = rig.zoom.add_transcript("late", f"WEBVTT\n\n1\n00:00:01.000 --> 00:00:04.000\n{cue}\n", TOKEN)
        await rig.accept(transcript_completed(UUID, url, TOKEN))
        await _downloaded(rig)
        await rig.gw.settle()
    assert [t for _, _, t in texts(rig.gw)] == [
        "[participant 1] will send the numbers, mail [participant 1]."
    ]


@pytest.mark.parametrize("forgotten", [False, True], ids=["ended", "forgotten"])
async def test_a_long_late_recording_reaches_a_meeting_end_destination_as_one_transcript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgotten: bool
) -> None:
    """A recording that completes after the meeting ended is applied cue by cue, which takes longer than
    the pause after which late parts are sent on their own: each cue pushes that pause back, so the
    destination gets the recording whole, not in pieces."""
    cues = 1400
    sizes = await _late_recording(tmp_path, monkeypatch, cues, forgotten=forgotten)
    assert sizes == [cues]


async def test_a_late_recording_is_one_transcript_however_slow_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store so slow that every cue takes longer to apply than the pause after which late parts are
    sent on their own (the pause made nil here): the recording is still sent whole, once, because no
    part is ended again on its own while a late transcript is being applied."""
    monkeypatch.setattr(runtime, "LATE_END_SECONDS", 0.0)
    cues = 120
    assert await _late_recording(tmp_path, monkeypatch, cues) == [cues]


async def _late_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cues: int, *, forgotten: bool = False
) -> list[int]:
    """Tomás consents, the meeting ends (and is forgotten, if so), then a recording of ``cues`` cues of his
    completes: the sizes of the transcripts a meeting-end destination receives."""

    def stamp(x: int) -> str:
        return f"{x // 3600:02d}:{x % 3600 // 60:02d}:{x % 60:02d}.000"

    vtt_text = "WEBVTT\n\n" + "\n".join(
        f"{i + 1}\n{stamp(2 * i)} --> {stamp(2 * i + 1)}\nTomás Ó Briain: Point number {i} of the review.\n"
        for i in range(cues)
    )
    async with zoom_gateway(tmp_path, monkeypatch, (Dest("archive", delivery="meeting_end"),)) as rig:
        await rig.accept(fixture("meeting.started.json"))
        await rig.accept(participant_event("meeting.participant_joined", UUID, "16778242", "Tomás Ó Briain"))
        await rig.accept(chat_event(UUID, "16778242", "c-1", "/consent summary"))
        await rig.accept(fixture("meeting.ended.json"))
        if forgotten:
            await rig.gw.app[GATEWAY].tick(datetime.now(UTC) + timedelta(minutes=11))
        url = rig.zoom.add_transcript("late", vtt_text, TOKEN)
        await rig.accept(transcript_completed(UUID, url, TOKEN))
        await _downloaded(rig)
        await rig.gw.settle()
    return [len(t) for t in transcripts(rig.gw.fakes["archive"])]


UNKNOWN_SPEAKER = """WEBVTT

1
00:00:01.000 --> 00:00:03.000
Dana Whitfield: ZQXSECRET I would rather not be in the notes.

2
00:00:04.000 --> 00:00:06.000
Gwen Ap Rhys: Ops: Thanks Dana Whitfield, noted. Whitfield will send the budget.

3
00:00:07.000 --> 00:00:08.000
pat quill: ZQXSECRET typed my name in lower case.

4
00:00:09.000 --> 00:00:10.000
Gwen Ap Rhys: Ops: Over to you, Pat Quill.
"""


async def test_a_speaker_label_the_roster_lacks_is_scrubbed_and_never_credited(rig: ZoomRig) -> None:
    """Dana and Pat speak under names no participant bears (joins missed, or renamed without a webhook):
    each name joins the roster under a hashed voice id, asking nobody, and is scrubbed from Gwen's words.
    Their own cues stay unattributed, also in a later file, when the voice is on the roster."""
    asked = consent_requests(rig)
    await rig.accept(fixture("meeting.started.json"))
    await rig.accept(participant_event("meeting.participant_joined", UUID, "16778241", "Gwen Ap Rhys: Ops"))
    await rig.accept(chat_event(UUID, "16778241", "c-1", "/consent summary"))
    url = rig.zoom.add_transcript("t1", UNKNOWN_SPEAKER, TOKEN)
    await rig.accept(transcript_completed(UUID, url, TOKEN, ts=1795855000001))
    await _downloaded(rig)
    later = "WEBVTT\n\n7\n00:01:00.000 --> 00:01:02.000\nDana Whitfield: ZQXSECRET again.\n"
    await rig.accept(transcript_completed(UUID, rig.zoom.add_transcript("t2", later, TOKEN), TOKEN))
    await _downloaded(rig, 2)
    await rig.gw.settle()
    assert texts(rig.gw) == [
        ("16778241", "speech", "Thanks [participant 2], noted. [participant 2] will send the budget."),
        ("16778241", "speech", "Over to you, [participant 3]."),
    ]
    state = rig.gw.app[GATEWAY].meeting("zoom", UUID)
    assert state is not None
    voices = {p.name for pid, p in state.participants.items() if pid.startswith(VOICE_PREFIX)}
    assert voices == {"Dana Whitfield", "pat quill"}
    assert asked == ["16778241"]
    reasons = {d.segment_id: d.reasons for d in await rig.gw.decisions()}
    for key in (1, 3, 7):
        assert any("unattributed" in r for r in reasons[f"{UUID}/vtt/f-tr/{key}"]), key


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Dana Whitfield: hello", "Dana Whitfield"),
        ("Gwen Ap Rhys: Ops: hello", "Gwen Ap Rhys"),  # a name with a colon gives its first part
        ("dana  whitfield: typed in lower case", "dana whitfield"),
        ("李华: 你好", "李华"),
        ("Dr. María de la Cruz Fernández: hola", "Dr. María de la Cruz Fernández"),
        ("Note: a sentence can look like a name", "Note"),  # a false name only scrubs a word
        ("And the budget is approved.", None),
        ("The plan for the next quarter is simple: we ship", None),
        ("We meet at 10:30 tomorrow", None),
        ("12 34: numbers only", None),
        (": nothing before it", None),
    ],
)
def test_a_speaker_label_is_the_name_like_text_before_the_first_colon(text: str, label: str | None) -> None:
    """Up to six words with a letter before the first ``": "`` read as a name; capitals are not needed."""
    assert speaker_label(text) == label


REJOINED = (
    "WEBVTT\n\n1\n00:00:01.000 --> 00:00:03.000\nAlice Ames: Before my connection dropped.\n\n"
    "2\n00:10:01.000 --> 00:10:03.000\nAlice Ames: After I rejoined.\n"
)


@pytest.mark.parametrize("consents_again", [True, False], ids=["same-choices", "other-choices"])
async def test_a_rejoiner_under_a_new_id_is_one_speaker_only_when_their_choices_are_the_same(
    rig: ZoomRig, consents_again: bool
) -> None:
    """Zoom gives Alice a new id when she rejoins, so two ids bear her name. With the same address and the
    same choices they are one person: her recorded words go, credited to her latest id. If the second id
    has not consented (a changed mind, or someone else at her address), the name stays ambiguous and
    nothing of hers goes."""
    alice = {"email": "alice@example.org"}
    await rig.accept(fixture("meeting.started.json"))
    await rig.accept(participant_event("meeting.participant_joined", UUID, "16778240", "Alice Ames", **alice))
    await rig.accept(chat_event(UUID, "16778240", "c-1", "/consent summary"))
    await rig.accept(participant_event("meeting.participant_left", UUID, "16778240", "Alice Ames", **alice))
    await rig.accept(participant_event("meeting.participant_joined", UUID, "16779264", "Alice Ames", **alice))
    if consents_again:
        await rig.accept(chat_event(UUID, "16779264", "c-2", "/consent summary"))
    await rig.accept(transcript_completed(UUID, rig.zoom.add_transcript("t1", REJOINED, TOKEN), TOKEN))
    await _downloaded(rig)
    await rig.gw.settle()
    expected = [
        ("16779264", "speech", "Before my connection dropped."),
        ("16779264", "speech", "After I rejoined."),
    ]
    assert texts(rig.gw) == (expected if consents_again else [])


@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, "a@example.org", "A@example.org", "b@example.org"]),
            st.sampled_from([None, ConsentChoice.GIVEN, ConsentChoice.REFUSED, ConsentChoice.WITHDRAWN]),
            st.sampled_from(["n1", "n2"]),
        ),
        max_size=6,
    )
)
def test_one_per_person_merges_only_one_address_with_the_same_choices(
    people: list[tuple[str | None, ConsentChoice | None, str]],
) -> None:
    """Whatever the roster, an id left out of the attribution roster has a kept id at the same address
    (any case) with the same choice under the same notice, which bears its names; every other id is kept."""
    state = MeetingState("zoom", "m1")
    for n, (email, choice, notice) in enumerate(people):
        state = meeting.joined(state, f"p{n}", "Alice Ames", email)
        if choice is not None:
            record = consent_record(record_id=f"r{n}", subject=f"p{n}", choice=choice, notice_version=notice)
            state = meeting.with_record(state, record)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    roster = one_per_person(state, now)

    def choices(pid: str) -> tuple[object, ...]:
        entry = state.consent(pid, "summary")
        return entry.at(now), entry.notice_version

    for pid, person in state.participants.items():
        if pid in roster:
            continue
        assert person.email is not None
        kept = [
            k
            for k, p in roster.items()
            if (p.email or "").lower() == person.email.lower() and choices(k) == choices(pid)
        ]
        assert len(kept) == 1 and set(person.names) <= set(roster[kept[0]].names)
