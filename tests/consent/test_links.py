"""Personal consent links: signed, bound to one participant of one meeting, expiring (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.links import ConsentLinks, LinkSigner, Refusal, consent_request
from gateway.policy.load import load_policy

SECRET = "a link secret for the tests, 32+"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)
signer = LinkSigner(SECRET)
ids = st.text(min_size=1, max_size=40)
tokens = st.builds(lambda p, m, i: signer.mint(p, m, i, LATER), ids, ids, ids)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@given(ids, ids, ids)
def test_a_minted_link_verifies_to_its_own_scope(platform: str, meeting: str, participant: str) -> None:
    """A fresh link verifies, naming exactly the platform, meeting and participant it was minted for."""
    checked = signer.verify(
        signer.mint(platform, meeting, participant, LATER), NOW, (platform, meeting, participant)
    )
    assert checked.scope is not None
    assert (checked.scope.platform, checked.scope.meeting_id, checked.scope.participant_id) == (
        platform,
        meeting,
        participant,
    )


@given(tokens, st.data())
def test_any_change_to_a_token_fails(token: str, data: st.DataObject) -> None:
    """Replacing, inserting or deleting any one character of a token makes it fail verification."""
    i = data.draw(st.integers(0, len(token) - 1))
    kind = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    char = data.draw(st.sampled_from(B64URL).filter(lambda c: kind != "replace" or c != token[i]))
    changed = {
        "replace": token[:i] + char + token[i + 1 :],
        "insert": token[:i] + char + token[i:],
        "delete": token[:i] + token[i + 1 :],
    }[kind]
    assert not signer.verify(changed, NOW).ok


@given(ids, ids, ids, ids)
def test_a_link_never_verifies_for_another_participant(
    meeting: str, a: str, b: str, other_meeting: str
) -> None:
    """A's link is refused when checked for B, or for A in another meeting."""
    token = signer.mint("generic", meeting, a, LATER)
    if b != a:
        assert signer.verify(token, NOW, ("generic", meeting, b)).refusal is Refusal.WRONG_SUBJECT
    if other_meeting != meeting:
        assert signer.verify(token, NOW, ("generic", other_meeting, a)).refusal is Refusal.WRONG_SUBJECT


def test_a_spliced_token_is_refused() -> None:
    """B's payload under A's signature is refused: the signature covers the payload."""
    a = signer.mint("generic", "m", "p-a", LATER)
    b = signer.mint("generic", "m", "p-b", LATER)
    spliced = b.split(".")[0] + "." + a.split(".")[1]
    assert signer.verify(spliced, NOW).refusal is Refusal.BAD_SIGNATURE


@given(st.integers(-10_000, 10_000))
def test_expiry_is_honoured(offset: int) -> None:
    """A link works strictly before its expiry second and never from it on."""
    expires = NOW + timedelta(hours=1)
    token = signer.mint("generic", "m", "p", expires)
    when = expires + timedelta(seconds=offset)
    checked = signer.verify(token, when)
    assert checked.ok == (offset < 0)
    if offset >= 0:
        assert checked.refusal is Refusal.EXPIRED


def test_another_secret_does_not_verify() -> None:
    """A link minted under another secret is refused."""
    token = LinkSigner("another secret, long enough!!").mint("generic", "m", "p", LATER)
    assert signer.verify(token, NOW).refusal is Refusal.BAD_SIGNATURE


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_without_raising(text: str) -> None:
    """Whatever a URL carries, verification returns a refusal value and never raises."""
    assert not signer.verify(text, NOW).ok


def test_form_mac_binds_state_to_the_token() -> None:
    """A form state signed for one link does not verify for another or when changed."""
    a, b = signer.mint("generic", "m", "p-a", LATER), signer.mint("generic", "m", "p-b", LATER)
    mac = signer.form_mac(a, "[1,2]")
    assert signer.form_ok(a, "[1,2]", mac)
    assert not signer.form_ok(b, "[1,2]", mac)
    assert not signer.form_ok(a, "[1,3]", mac)


def test_consent_request_carries_a_fresh_link_for_the_policy_purposes() -> None:
    """The join notice holds a link for that participant, every purpose, and the policy's link lifetime."""
    policy = load_policy(Path("policies/default.yaml"))
    links = ConsentLinks(signer, "https://consent.example")
    notice = consent_request(links, policy, "generic", "m-1", "p-1", NOW)
    assert notice.kind == "consent_request" and notice.participant_id == "p-1"
    assert notice.data["url"] == "https://consent.example" + notice.data["path"]
    assert notice.data["purposes"] == list(policy.purposes)
    hours = policy.spec.consent.link_ttl_hours
    assert notice.data["expires_at"] == (NOW + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
    token = str(notice.data["path"]).removeprefix("/consent/")
    assert signer.verify(token, NOW, ("generic", "m-1", "p-1")).ok
    assert not signer.verify(token, NOW + timedelta(hours=hours)).ok
