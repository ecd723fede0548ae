"""The consent page in a real browser: Debian's headless Chromium driven by Playwright (nothing downloaded).

Accept one purpose, refuse another, withdraw, and try a tampered, an expired and another participant's
link; the ledger and what the fake AI services received are checked after each step. With
``CONSENT_GATEWAY_SCREENSHOTS=1`` the test also writes ``docs/screenshots/consent-page-*.png`` (desktop
1280 px and phone 375 px wide), the images committed in the repository.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from gateway.model import ConsentChoice
from gateway.web.keys import LINKS
from tests.conftest import CHROMIUM_ARGS, require_chromium
from tests.web.consent_harness import consent_serving, link_of, start_meeting
from tests.web.harness import LiveGateway, segment

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PEOPLE = (("p-sam", "Sam Okafor"), ("p-wen", "Wen Li"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require_chromium()
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


def purpose(page: Page, description: str):  # type: ignore[no-untyped-def]
    return page.get_by_role("group", name=description)


async def ledger_choices(live: LiveGateway, pid: str) -> list[tuple[ConsentChoice, tuple[str, ...]]]:
    return [(e.record.choice, e.record.purposes) for e in await live.ledger() if e.record.subject == pid]


async def test_participant_accepts_refuses_and_withdraws_in_the_browser(
    tmp_path: Path, browser: Browser
) -> None:
    """Yes to summaries, No to training, then withdrawing: the ledger and AI services follow each click."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        url = (await link_of(live, "p-sam"))["url"]
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(url)
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Your choices about AI in this meeting"
        )
        radios = page.get_by_role("radio")
        assert await radios.count() == 4
        for i in range(4):
            await expect(radios.nth(i)).not_to_be_checked()
        await shoot(page, "desktop")

        await purpose(page, "Meeting summaries for the participants.").get_by_label("Yes, I agree").check()
        await purpose(page, "Improving the vendor's AI models.").get_by_label("No, I do not agree").check()
        await page.get_by_role("button", name="Save my choices").click()
        await expect(page.get_by_role("status")).to_have_text("Your choices were saved.")
        await expect(page.get_by_role("heading", name="Your receipt")).to_be_visible()
        assert await ledger_choices(live, "p-sam") == [
            (ConsentChoice.REFUSED, ("training",)),
            (ConsentChoice.GIVEN, ("summary",)),
        ]
        await shoot(page, "desktop-saved")

        await live.send(segment("s1", "p-sam", "Sam agreed to summaries"))
        await live.settle()
        assert live.fakes["summariser"].texts_by_participant() == {"p-sam": ["Sam agreed to summaries"]}
        assert live.fakes["trainer"].segments() == []

        await page.get_by_role("button", name="Withdraw all my consent").click()
        await expect(page.get_by_role("status")).to_have_text("Your choices were saved.")
        assert (await ledger_choices(live, "p-sam"))[-1] == (ConsentChoice.WITHDRAWN, ("summary",))
        await expect(purpose(page, "Meeting summaries for the participants.")).to_contain_text(
            "No (you withdrew)"
        )
        await live.send(segment("s2", "p-sam", "Sam after withdrawing"))
        await live.settle()
        assert live.fakes["summariser"].texts_by_participant() == {"p-sam": ["Sam agreed to summaries"]}
        assert await ledger_choices(live, "p-wen") == []  # nothing Sam did touched Wen


async def test_keyboard_alone_can_answer_and_save(tmp_path: Path, browser: Browser) -> None:
    """Tab moves to the choices, arrow keys and Space select, Enter on the button saves; focus is visible."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto((await link_of(live, "p-wen"))["url"] + "?lang=en")
        first = page.get_by_role("radio").first
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await first.evaluate("el => el === document.activeElement"):
                break
        outline = await first.evaluate("el => getComputedStyle(el.closest('label')).outlineStyle")
        assert outline != "none"  # the focused choice shows a focus ring
        await page.keyboard.press("Space")
        await expect(first).to_be_checked()
        await page.get_by_role("button", name="Save my choices").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("status")).to_have_text("Your choices were saved.")
        assert await ledger_choices(live, "p-wen") == [(ConsentChoice.GIVEN, ("summary",))]


async def test_phone_width_in_french(tmp_path: Path, browser: Browser) -> None:
    """At 375 px the page needs no sideways scrolling, and Yes and No are the same size."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        page = await browser.new_page(viewport={"width": 375, "height": 812})
        await page.goto((await link_of(live, "p-sam"))["url"])
        assert await page.evaluate("document.documentElement.scrollWidth") <= 375
        yes = await page.locator("label.choice").nth(0).bounding_box()
        no = await page.locator("label.choice").nth(1).bounding_box()
        assert yes is not None and no is not None
        assert (yes["width"], yes["height"]) == (no["width"], no["height"])
        await shoot(page, "phone")
        await page.goto((await link_of(live, "p-sam"))["url"] + "?lang=fr")
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Vos choix concernant l'IA dans cette réunion"
        )
        await shoot(page, "phone-fr")


async def test_bad_links_are_refused_in_the_browser(tmp_path: Path, browser: Browser) -> None:
    """A tampered, an expired and another participant's link each show the 403 page and change nothing."""
    async with consent_serving(tmp_path) as live:
        await start_meeting(live, *PEOPLE)
        sam = (await link_of(live, "p-sam"))["url"]
        wen = (await link_of(live, "p-wen"))["url"]
        token = sam.rsplit("/", 1)[1]
        expired = live.app[LINKS].signer.mint(
            "generic", "m-weekly", "p-sam", datetime.now(UTC) - timedelta(minutes=1)
        )
        # Wen's link with Sam's signature: what someone gets by editing their own link to name another
        spliced = wen.rsplit("/", 1)[1].split(".")[0] + "." + token.split(".")[1]
        tampered = token[:10] + ("x" if token[10] != "x" else "y") + token[11:]
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        for bad in (tampered, expired, spliced):
            response = await page.goto(f"{live.url}/consent/{bad}")
            assert response is not None and response.status == 403
            await expect(page.get_by_role("heading", level=1)).to_have_text("This link cannot be used")
            assert await page.get_by_role("radio").count() == 0
        await shoot(page, "refused")
        assert await live.ledger() == []


async def shoot(page: Page, name: str) -> None:
    if os.environ.get("CONSENT_GATEWAY_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / f"consent-page-{name}.png"), full_page=True)
