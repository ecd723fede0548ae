"""The consent page, its receipts, the consent-link API and the notifier, through the real app on loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent import receipts
from gateway.consent.changes import plan, withdraw_all
from gateway.meeting import MeetingState, with_record
from gateway.model import ConsentChoice, ConsentState
from gateway.notifier import Notifier
from gateway.notify import Notice
from gateway.reload import POLICIES
from gateway.web.consent_text import negotiate
from gateway.web.keys import GATEWAY, LINKS, NOTIFIER
from tests.fakes.ai_service import FakeAIService
from tests.strategies import consent_record
from tests.web.consent_harness import consent_serving, form_fields, link_of, start_meeting
from tests.web.harness import INGEST_TOKEN, SIGNING_SECRET, LiveGateway, chat, segment, wait_for

PEOPLE = (("p-sam", "Sam Okafor"), ("p-wen", "Wen Li"))


class Inputs(HTMLParser):
    """Collects inputs, labels, fieldsets and legends of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str | None]] = []
        self.label_depth = 0
        self.unlabelled = 0
        self.fieldsets = 0
        self.legends = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "label":
            self.label_depth += 1
        elif tag == "fieldset":
            self.fieldsets += 1
        elif tag == "legend":
            self.legends += 1
        elif tag == "input":
            found = dict(attrs)
            self.inputs.append(found)
            if found.get("type") != "hidden" and not self.label_depth:
                self.unlabelled += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.label_depth -= 1


async def page_of(live: LiveGateway, url: str, **headers: str) -> tuple[int, str, dict[str, str]]:
    async with live.http.get(url, headers=headers) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def submit(
    live: LiveGateway, url: str, choices: dict[str, str], action: str = "save"
) -> tuple[int, str]:
    _, page, _ = await page_of(live, url)
    form = {**form_fields(page), **{f"purpose.{p}": v for p, v in choices.items()}, "action": action}
    async with live.http.post(url, data=form) as resp:
        return resp.status, await resp.text()


async def choices(live: LiveGateway, pid: str) -> list[tuple[str, tuple[str, ...], str, str]]:
    return [
        (e.record.choice.value, e.record.purposes, e.record.channel, e.record.outcome.value)
        for e in await live.ledger()
        if e.record.subject == pid
    ]


async def test_page_has_no_preticked_input_and_every_choice_is_labelled(tmp_path: Path) -> None:
    """No input is checked or selected, every radio is in a label, each purpose a fieldset with a legend."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        link = await link_of(live, "p-sam")
        status, page, headers = await page_of(live, link["url"])
    assert status == 200
    parsed = Inputs()
    parsed.feed(page)
    radios = [i for i in parsed.inputs if i.get("type") == "radio"]
    assert len(radios) == 4  # a Yes and a No for each of two purposes
    assert not any("checked" in i or "selected" in i for i in parsed.inputs)
    assert parsed.unlabelled == 0
    assert parsed.fieldsets == parsed.legends == 2
    assert "<script" not in page.lower()
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_page_shows_notice_version_destinations_and_name(tmp_path: Path) -> None:
    """Each purpose shows its notice, version and the destinations that receive it."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        _, page, _ = await page_of(live, (await link_of(live, "p-sam"))["url"])
    assert "If you agree, what you say is sent to the summary service." in page
    assert "summary-3" in page and "training-1" in page
    assert "summariser, trainer" in page  # summary goes to both
    assert "Sam Okafor" in page


async def test_page_speaks_the_policy_languages(tmp_path: Path) -> None:
    """?lang=fr and Accept-Language: fr both give the French page with the policy's French notices."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        _, by_query, _ = await page_of(live, url + "?lang=fr")
        _, by_header, _ = await page_of(live, url, **{"Accept-Language": "de;q=0.9, fr-CA;q=0.8"})
        _, unknown, _ = await page_of(live, url + "?lang=xx")
    for page in (by_query, by_header):
        assert '<html lang="fr">' in page
        assert "Résumés de réunion pour les participants." in page
        assert "Oui, j&#39;accepte" in page and "Non, je n&#39;accepte pas" in page
    assert '<html lang="en">' in unknown


async def test_submitting_records_one_consent_page_record_per_choice(tmp_path: Path) -> None:
    """Yes and No record a given and a refused consent_page record, by the participant, with evidence."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        status, page = await submit(live, url, {"summary": "yes", "training": "no"})
        entries = await live.ledger()
    assert status == 200 and "Your choices were saved." in page and "Your receipt" in page
    assert [(e.record.choice, e.record.purposes) for e in entries] == [
        (ConsentChoice.REFUSED, ("training",)),
        (ConsentChoice.GIVEN, ("summary",)),
    ]
    for entry in entries:
        r = entry.record
        assert (r.subject, r.indicated_by, r.channel) == ("p-sam", "p-sam", "consent_page")
        assert r.evidence and r.evidence == entries[0].record.evidence
    assert [e.record.notice_version for e in entries] == ["training-1", "summary-3"]


async def test_resubmitting_the_same_form_records_nothing_more(tmp_path: Path) -> None:
    """Posting one rendered form twice (a double click, a reload) records its choices once."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        _, page, _ = await page_of(live, url)
        form = {**form_fields(page), "purpose.summary": "yes", "action": "save"}
        for _ in range(2):
            async with live.http.post(url, data=form) as resp:
                assert resp.status == 200
        assert len(await live.ledger()) == 1


async def test_withdraw_all_and_change_in_one_step(tmp_path: Path) -> None:
    """A later visit withdraws every given consent in one step, or turns a Yes into a withdrawal."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        await submit(live, url, {"summary": "yes", "training": "yes"})
        _, page, _ = await page_of(live, url)
        assert page.count("Yes (since") == 2
        await submit(live, url, {"training": "no"})
        await submit(live, url, {}, action="withdraw_all")
        status, page = await submit(live, url, {}, action="withdraw_all")
        got = await choices(live, "p-sam")
    assert got == [  # one record per notice version: the two purposes have different notices
        ("given", ("summary",), "consent_page", "accepted"),
        ("given", ("training",), "consent_page", "accepted"),
        ("withdrawn", ("training",), "consent_page", "accepted"),
        ("withdrawn", ("summary",), "consent_page", "accepted"),
    ]
    assert status == 200 and "nothing to withdraw" in page


async def test_an_unchanged_or_empty_submission_records_nothing(tmp_path: Path) -> None:
    """Choosing nothing, or what is already the case, writes no record and says so."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        _, empty = await submit(live, url, {})
        await submit(live, url, {"training": "no"})
        _, same = await submit(live, url, {"training": "no"})
        assert len(await live.ledger()) == 1
    assert "nothing changed" in empty and "already your choices" in same


async def test_a_tampered_form_changes_nothing(tmp_path: Path) -> None:
    """A form whose signed state was altered, or a value other than yes/no, is refused with 400."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        _, page, _ = await page_of(live, url)
        fields = form_fields(page)
        state = json.loads(fields["state"])
        state[2]["summary"] = "summary-0"  # claim an older notice was shown
        forged = {**fields, "state": json.dumps(state), "purpose.summary": "yes"}
        async with live.http.post(url, data=forged) as resp:
            assert resp.status == 400
        async with live.http.post(url, data={**fields, "purpose.summary": "maybe"}) as resp:
            assert resp.status == 400
        async with live.http.post(url, data={"purpose.summary": "yes"}) as resp:
            assert resp.status == 400
        assert await live.ledger() == []


async def test_another_participants_form_does_not_work_on_my_link(tmp_path: Path) -> None:
    """Wen's rendered form posted to Sam's link is refused: the form state is bound to the link."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        sam, wen = (await link_of(live, "p-sam"))["url"], (await link_of(live, "p-wen"))["url"]
        _, wen_page, _ = await page_of(live, wen)
        async with live.http.post(sam, data={**form_fields(wen_page), "purpose.summary": "yes"}) as resp:
            assert resp.status == 400
        assert await live.ledger() == []


async def test_bad_links_get_the_same_403_page(tmp_path: Path) -> None:
    """Tampered, expired and spliced links answer one 403 HTML page that does not say what failed."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        sam = (await link_of(live, "p-sam"))["path"].removeprefix("/consent/")
        wen = (await link_of(live, "p-wen"))["path"].removeprefix("/consent/")
        past = datetime.now(UTC) - timedelta(seconds=1)
        expired = live.app[LINKS].signer.mint("generic", "m-weekly", "p-sam", past)
        spliced = wen.split(".")[0] + "." + sam.split(".")[1]
        tampered = sam[:-1] + ("A" if sam[-1] != "A" else "B")
        bodies = set()
        for token in (tampered, expired, spliced, "nonsense"):
            for method in ("GET", "POST"):
                async with live.http.request(method, f"{live.url}/consent/{token}") as resp:
                    assert resp.status == 403 and resp.content_type == "text/html"
                    bodies.add(await resp.text())
            async with live.http.get(f"{live.url}/consent/{token}/receipt.json") as resp:
                assert resp.status == 403 and resp.content_type == "application/problem+json"
        assert await live.ledger() == []
    assert len(bodies) == 1
    (body,) = bodies
    assert "This link cannot be used" in body and "Traceback" not in body


async def test_receipt_json_verifies_against_the_published_key(tmp_path: Path) -> None:
    """The link's receipt.json is the latest record in its scope, signed by the well-known key."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        await submit(live, url, {"summary": "yes"})
        async with live.http.get(url + "/receipt.json") as resp:
            receipt = await resp.json()
        async with live.http.get(f"{live.url}/.well-known/consent-gateway/receipt-key") as resp:
            key = receipts.load_public_key(await resp.text())
        async with live.http.get(url + "/receipt.json?record=someone-elses") as resp:
            missing = resp.status
        (entry,) = await live.ledger()
    assert receipts.verify(receipt, key).ok
    assert receipt["record_id"] == entry.record.record_id and receipt["subject"] == "p-sam"
    assert receipt["ledger"]["entry_hash"] == entry.hash
    assert missing == 404


async def test_consent_link_api_needs_ingest_credentials(tmp_path: Path) -> None:
    """The link API answers 401 without the ingest token and 404 problem+json for an unknown participant."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        base = f"{live.url}/v1/meetings/m-weekly/participants"
        async with live.http.get(f"{base}/p-sam/consent-link") as resp:
            assert resp.status == 401
        auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}
        async with live.http.get(f"{base}/p-nobody/consent-link", headers=auth) as resp:
            assert resp.status == 404 and resp.content_type == "application/problem+json"
            assert (await resp.json())["detail"] == "participant_id"


async def test_joining_sends_a_signed_consent_request_and_retries(tmp_path: Path) -> None:
    """Each joiner's link is POSTed, Standard Webhooks-signed, to notify_url; a 503 is retried."""
    async with FakeAIService(SIGNING_SECRET) as platform:
        platform.fail_next(1, status=503)
        async with consent_serving(tmp_path, notify_url=platform.url) as live:
            await start_meeting(live, *PEOPLE)

            async def both() -> bool:
                return len(platform.accepted()) == 2

            await wait_for(both, "two consent requests")
            link = await link_of(live, "p-sam")
    notices = {r.body["participant_id"]: r.body for r in platform.accepted()}
    assert set(notices) == {"p-sam", "p-wen"}
    sam = notices["p-sam"]
    assert sam["type"] == "consent_request" and sam["meeting_id"] == "m-weekly"
    assert sam["data"]["path"] == link["path"] and sam["data"]["purposes"] == ["summary", "training"]
    assert [r.status for r in platform.received].count(503) == 1


async def test_page_consent_governs_forwarding(tmp_path: Path) -> None:
    """After Yes to summary only, Sam's words reach the summariser but not the trainer (which also trains)."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        await submit(live, (await link_of(live, "p-sam"))["url"], {"summary": "yes", "training": "no"})
        await live.send(segment("s1", "p-sam", "Hello from Sam"))
        await live.settle()
    assert live.fakes["summariser"].texts_by_participant() == {"p-sam": ["Hello from Sam"]}
    assert live.fakes["trainer"].segments() == []


async def test_a_page_link_still_withdraws_after_the_policy_drops_the_page_channel(tmp_path: Path) -> None:
    """Sam said Yes on the page; the operator then reloads a policy without the consent page. Every channel
    can also withdraw: Sam's link still opens, "No" is recorded and his words stop; a new "Yes" is
    recorded as rejected and the page says why."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        await submit(live, url, {"summary": "yes"})
        text = live.policy_path.read_text()
        live.policy_path.write_text(
            text.replace("  link_ttl_hours: 2", "  link_ttl_hours: 2\n  channels: [api]")
        )
        outcome = live.app[POLICIES].reload(live.app[GATEWAY])
        assert outcome.ok, outcome.errors
        status, _ = await submit(live, url, {"summary": "no"})
        assert status == 200
        status, page = await submit(live, url, {"training": "yes"})
        await live.send(segment("s1", "p-sam", "After saying no."))
        await live.settle()
        got = await choices(live, "p-sam")
    assert status == 200 and "does not accept choices made on this page" in page
    assert got == [
        ("given", ("summary",), "consent_page", "accepted"),
        ("withdrawn", ("summary",), "consent_page", "accepted"),
        ("given", ("training",), "consent_page", "rejected"),
    ]
    assert live.fakes["summariser"].segments() == []


async def _cover_other_meetings_only(live: LiveGateway) -> str:
    """Reload with ``applies_to`` narrowed so that no policy covers the meeting; returns the old text."""
    original = live.policy_path.read_text()
    narrowed = original.replace("consent:\n", "applies_to: {meetings: ['other-*']}\nconsent:\n", 1)
    live.policy_path.write_text(narrowed)
    outcome = live.app[POLICIES].reload(live.app[GATEWAY])
    assert outcome.ok, outcome.errors
    return original


@pytest.mark.parametrize("channel", ["page", "chat"])
async def test_everything_can_be_withdrawn_while_no_policy_covers_the_meeting(
    tmp_path: Path, channel: str
) -> None:
    """Sam said Yes; a reload narrows ``applies_to`` so that no policy covers the meeting, and Sam withdraws,
    on his page ("Withdraw all": the only thing it offers then, and it says why) or with "/optout" in chat.
    It is recorded, so when the operator restores the policy Sam's words stay his own."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        await submit(live, url, {"summary": "yes", "training": "yes"})
        original = await _cover_other_meetings_only(live)
        status, page, _ = await page_of(live, url)
        assert status == 200 and "No consent policy covers this meeting" in page
        assert 'value="yes"' not in page and 'value="save"' not in page
        yes_status, _ = await submit(live, url, {"summary": "yes"})  # a forged "save": changes nothing
        if channel == "page":
            status, page = await submit(live, url, {}, action="withdraw_all")
            assert status == 200
        else:
            assert (await live.post(chat("c1", "p-sam", "/optout"))).status == 200
        live.policy_path.write_text(original)
        assert live.app[POLICIES].reload(live.app[GATEWAY]).ok
        await live.send(segment("s1", "p-sam", "After I withdrew everything."))
        await live.settle()
        got = await choices(live, "p-sam")
    assert yes_status == 400
    withdrawals = got[2:]  # after the two Yes: what the withdrawal recorded, nothing else
    assert {(c, *rest) for c, _, *rest in withdrawals} == {
        ("withdrawn", "consent_page" if channel == "page" else "chat", "accepted")
    }
    assert {p for _, purposes, _, _ in withdrawals for p in purposes} == {"summary", "training"}
    assert live.fakes["summariser"].segments() == []
    assert live.fakes["trainer"].segments() == []


# --- pure helpers --------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, tzinfo=UTC)
STATES = st.sampled_from([None, ConsentChoice.GIVEN, ConsentChoice.REFUSED, ConsentChoice.WITHDRAWN])


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.tuples(STATES, st.booleans())))
def test_plan_records_only_changes(cases: dict[str, tuple[ConsentChoice | None, bool]]) -> None:
    """A submission records only changes: Yes gives, No withdraws or refuses; restrictions come first."""
    state = MeetingState("generic", "m")
    for n, (purpose, (current, _)) in enumerate(cases.items()):
        if current is not None:
            state = with_record(state, consent_record(record_id=f"r{n}", platform="generic", meeting_id="m",
                                                      purposes=(purpose,), choice=current))  # fmt: skip
    groups = plan(state, "p1", {p: yes for p, (_, yes) in cases.items()}, {}, NOW)
    asked: dict[str, Any] = {p: choice for choice, ps, _ in groups for p in ps}
    for purpose, (_, yes) in cases.items():
        was = state.consent("p1", purpose).at(NOW)
        if yes:
            assert asked.get(purpose) == (None if was is ConsentState.GIVEN else ConsentChoice.GIVEN)
        elif was is ConsentState.GIVEN:
            assert asked.get(purpose) is ConsentChoice.WITHDRAWN
        else:
            assert asked.get(purpose) in (None, ConsentChoice.REFUSED)
    order = [choice for choice, _, _ in groups]
    assert order == sorted(
        order, key=[ConsentChoice.WITHDRAWN, ConsentChoice.REFUSED, ConsentChoice.GIVEN].index
    )


def test_language_negotiation() -> None:
    """?lang= wins if offered; then Accept-Language by quality (region falls back to language); else first."""
    offered = ["en", "fr"]
    assert negotiate("fr", "en", offered) == "fr"
    assert negotiate("de", "fr-CA, en;q=0.5", offered) == "fr"
    assert negotiate(None, "de, en;q=0.2, fr;q=0.9", offered) == "fr"
    assert negotiate(None, "fr;q=0", offered) == "en"
    assert negotiate(None, "fr;q=bad", offered) == "en"
    assert negotiate(None, None, offered) == "en"


def test_notifier_forgets_expired_links_and_keeps_the_latest() -> None:
    """The link API serves a participant's newest link, and nothing once it has expired."""

    def request(url: str, expires: datetime) -> Notice:
        data = {"url": url, "path": "/x", "purposes": [], "expires_at": expires.isoformat()}
        return Notice("generic", "m", "p", "consent_request", data)

    notifier = Notifier(None, "")
    notifier(request("old", NOW + timedelta(hours=1)))
    notifier(request("new", NOW + timedelta(hours=2)))
    assert [n.data["url"] for n in notifier.latest_links("m", "p", NOW)] == ["new"]
    assert notifier.latest_links("m", "p", NOW + timedelta(hours=2)) == []
    assert notifier.latest_links("m", "someone-else", NOW) == []


async def test_the_same_ids_on_two_platforms_never_get_each_others_link(tmp_path: Path) -> None:
    """A generic meeting and a Zoom meeting that happen to share the meeting and participant ids are two
    people: without ``platform`` the link API refuses to choose (409), and with it each gets their own."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        notifier = live.app[NOTIFIER]
        generic = await link_of(live, "p-sam")
        zoom = {
            **{k: generic[k] for k in ("path", "purposes", "expires_at")},
            "url": "https://zoom.example/x",
        }
        notifier(Notice("zoom", generic["meeting_id"], "p-sam", "consent_request", zoom))
        base = f"{live.url}/v1/meetings/{generic['meeting_id']}/participants/p-sam/consent-link"
        auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}
        async with live.http.get(base, headers=auth) as resp:
            assert (resp.status, (await resp.json())["detail"]) == (409, "platform")
        for platform, path in (("generic", generic["path"]), ("zoom", zoom["path"])):
            async with live.http.get(base, params={"platform": platform}, headers=auth) as resp:
                assert resp.status == 200
                doc = await resp.json()
            assert (doc["platform"], doc["path"]) == (platform, path)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), STATES),
    st.sets(st.sampled_from(["a", "b", "c"])),
)
def test_withdraw_all_withdraws_every_given_purpose_shown_or_not(
    current: dict[str, ConsentChoice | None], shown: set[str]
) -> None:
    """ "Withdraw all" takes back every purpose given, also one the page no longer shows (a reload dropped
    it; another may bring it back), and nothing else."""
    state = MeetingState("generic", "m")
    for n, (purpose, choice) in enumerate(current.items()):
        if choice is not None:
            state = with_record(state, consent_record(record_id=f"r{n}", platform="generic", meeting_id="m",
                                                      purposes=(purpose,), choice=choice))  # fmt: skip
    groups = withdraw_all(state, "p1", dict.fromkeys(sorted(shown), "v1"), NOW)
    withdrawn = {p for choice, ps, _ in groups if choice is ConsentChoice.WITHDRAWN for p in ps}
    assert withdrawn == {p for p, choice in current.items() if choice is ConsentChoice.GIVEN}
    assert all(choice is ConsentChoice.WITHDRAWN for choice, _, _ in groups)


def test_a_yes_to_a_changed_notice_gives_consent_again() -> None:
    """Consent given under notice s1, and the page now shows s2: a Yes is recorded (under s2), not
    taken for "nothing changed"; a No withdraws the s1 consent as any given one."""
    state = with_record(MeetingState("generic", "m"), consent_record(
        record_id="r1", platform="generic", meeting_id="m", purposes=("a",), choice=ConsentChoice.GIVEN,
        notice_version="s1"))  # fmt: skip
    assert plan(state, "p1", {"a": True}, {"a": "s2"}, NOW) == [(ConsentChoice.GIVEN, ("a",), "s2")]
    assert plan(state, "p1", {"a": True}, {"a": "s1"}, NOW) == []
    assert plan(state, "p1", {"a": False}, {"a": "s2"}, NOW) == [(ConsentChoice.WITHDRAWN, ("a",), "s2")]
