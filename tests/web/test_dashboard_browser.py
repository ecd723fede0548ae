"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, JavaScript switched off.

An auditor logs in with the form, reads the verification status, opens a meeting's timeline, searches a
participant, downloads the verifiable ledger export and logs out. With ``CONSENT_GATEWAY_SCREENSHOTS=1`` the
test also writes ``docs/screenshots/dashboard-*.png``, the images committed in the repository.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import SecretStr

from gateway import audit
from gateway.consent import ledger
from tests.conftest import CHROMIUM_ARGS, require_chromium, tamper
from tests.web.harness import MEETING, Dest, LiveGateway, consent, event, joined, segment, serving

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
AUDITOR = "browser-auditor-token"
TEXT = "Our quarterly numbers look terrible"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require_chromium()
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def shoot(page: Page, name: str) -> None:
    if os.environ.get("CONSENT_GATEWAY_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


async def a_meeting(gw: LiveGateway) -> None:
    """Three people, two destinations: consent through two channels, a refusal, a withdrawal, a departure.
    Each event is stamped as it is sent, as a platform would."""

    def by_chat(pid: str, purposes: tuple[str, ...]) -> dict[str, Any]:
        return {**consent(pid, "given", purposes), "channel": "chat"}

    steps: list[Callable[[], dict[str, Any]]] = [
        lambda: joined("p-ada", "Ada Lovelace"),
        lambda: joined("p-bob", "Bob Marley"),
        lambda: consent("p-ada", "given", ("summary", "training")),
        lambda: joined("p-cy", "Cy Twombly"),
        lambda: consent("p-bob", "refused", ("summary", "training")),
        *(lambda i=i: segment(f"a{i}", "p-ada", f"{TEXT} {i}") for i in range(3)),
        lambda: segment("b1", "p-bob", TEXT),
        lambda: by_chat("p-cy", ("summary",)),
        lambda: segment("c1", "p-cy", TEXT),
        lambda: consent("p-ada", "withdrawn", ("training",)),
        lambda: segment("a9", "p-ada", TEXT),
        lambda: event("participant.left", MEETING, participant_id="p-bob"),
    ]
    for step in steps:
        await gw.send(step())
    await gw.settle()


async def test_auditor_reads_the_consent_log_without_javascript(tmp_path: Path, browser: Browser) -> None:
    """Login form, verification status, timeline with counts and rule ids (no text, no names), participant
    search, a download that re-verifies offline, and logout, all with JavaScript disabled."""
    dests = (Dest("summariser"), Dest("trainer", ("training",)))
    async with serving(tmp_path, dests, auditor_tokens=(SecretStr(AUDITOR),)) as gw:
        await a_meeting(gw)
        context = await browser.new_context(
            java_script_enabled=False, accept_downloads=True, viewport={"width": 1280, "height": 800}
        )
        page = await context.new_page()
        await page.goto(f"{gw.url}/dashboard/")
        await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        await page.get_by_label("Token").fill("wrong")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("alert")).to_have_text("That token is not an admin or auditor token.")
        await shoot(page, "login")
        await page.get_by_label("Token").fill(AUDITOR)
        await page.get_by_role("button", name="Log in").click()

        await expect(page.locator("#verify-status")).to_have_text("Verified: 4 entries, hash chain intact.")
        cookies = await context.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            ("cg_session", True, "Strict")
        ]
        await shoot(page, "overview")

        await page.get_by_role("link", name=MEETING).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(f"Meeting {MEETING}")
        timeline = page.locator("#timeline")
        await expect(timeline).to_contain_text("withdrawn (accepted) for training")
        await expect(timeline).to_contain_text("channel chat")
        await expect(timeline).to_contain_text("drop → trainer")
        await expect(page.locator("#decision-counts")).to_contain_text("destinations.trainer.purposes")
        html = await page.content()
        for private in ("quarterly", "terrible", "lovelace", "marley", "twombly"):
            assert private not in html.lower()
        await shoot(page, "meeting")

        await page.get_by_label("Participant id").fill("p-bob")
        await page.get_by_role("button", name="Search").click()
        await expect(page.locator("#records")).to_contain_text("refused")
        await shoot(page, "participant")

        await page.goto(f"{gw.url}/dashboard/")
        async with page.expect_download() as info:
            await page.get_by_role("link", name="Ledger (JSON lines, verifiable)").click()
        download = await info.value
        exported = await asyncio.to_thread(Path(await download.path()).read_text)
        report = ledger.verify_rows(audit.rows_from_jsonl(exported.splitlines()))
        assert (report.ok, report.count) == (True, 4)

        await page.get_by_role("button", name="Log out").click()
        await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        await page.goto(f"{gw.url}/dashboard/")
        await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        await context.close()


async def test_a_tampered_ledger_shows_failed_in_the_browser(tmp_path: Path, browser: Browser) -> None:
    """After an entry is edited in the database, the overview says FAILED and names the entry."""
    async with serving(tmp_path, auditor_tokens=(SecretStr(AUDITOR),)) as gw:
        await gw.send(joined("p-ada", "Ada"), consent("p-ada", "given"), consent("p-ada", "withdrawn"))
        edit = "UPDATE ledger SET record_json = replace(record_json, 'withdrawn', 'given') WHERE seq = 2"
        await tamper(gw.database, edit)
        context = await browser.new_context(
            java_script_enabled=False,
            viewport={"width": 1280, "height": 700},
            extra_http_headers={"Authorization": f"Bearer {AUDITOR}"},
        )
        page = await context.new_page()
        await page.goto(f"{gw.url}/dashboard/")
        status = page.locator("#verify-status")
        await expect(status).to_have_text("Verification FAILED: 1 problem(s) in 2 entries.")
        await expect(page.get_by_role("cell", name="hash_mismatch")).to_be_visible()
        await shoot(page, "tampered")
        await context.close()
