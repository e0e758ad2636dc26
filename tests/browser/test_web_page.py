"""The reference web page (examples/web) in headless Chromium, against the whole system.

Debian's ``chromium`` (installed by ``make test``), driven by Playwright; nothing downloads a
browser. Two people on two pages: what one does shows up on the other's page by itself.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from kernel.settings import Settings
from tests.e2e.conftest import running_system
from tests.pipeline import isolated

COMMAND_PORT, QUERY_PORT, WEB_PORT = 28400, 28401, 28402
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(".tally/test/web-page.png")


@pytest.fixture(scope="module")
def site(settings: Settings) -> Iterator[str]:
    """The whole system and the web page's server; the page's URL."""
    config = isolated(
        settings,
        command_api_port=COMMAND_PORT,
        query_api_port=QUERY_PORT,
        web_port=WEB_PORT,
        cors_origins=f"http://127.0.0.1:{WEB_PORT}",
    )
    with running_system(config, COMMAND_PORT, QUERY_PORT, WEB_PORT):
        yield f"http://127.0.0.1:{WEB_PORT}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make browser` installs it"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


def save(image: bytes) -> None:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(image)


async def open_as(browser: Browser, url: str, user: str) -> Page:
    """A page of its own (own session storage), signed in as ``user``, live stream open."""
    context = await browser.new_context(viewport={"width": 900, "height": 700})
    page = await context.new_page()
    page.on("pageerror", lambda error: print(f"[{user}] page error: {error}"))
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=30_000)
    await page.fill("#user", user)
    await page.click("#sign-in button")
    await expect(page.locator("#me")).to_have_text(user)
    await expect(page.locator("#live")).to_have_class("on", timeout=15_000)
    return page


async def test_two_pages_see_each_others_comments_votes_and_replies(
    site: str, browser: Browser
) -> None:
    started = time.monotonic()
    url = f"{site}/?c=web-{uuid.uuid4().hex[:8]}"
    alice = await open_as(browser, url, "alice")
    bob = await open_as(browser, url, "bob")

    await alice.fill("#content", "Hello from Alice")
    await alice.click("#new-comment button")
    mine = alice.locator("#comments > li.comment").first
    await expect(mine.locator("> .body > .content")).to_have_text("Hello from Alice")
    comment_id = await mine.get_attribute("data-id")

    # Bob's page shows it by itself (comment_created over SSE), then Bob votes it up: his page
    # changes at once (optimistic), Alice's when the projector publishes the new score.
    theirs = bob.locator(f"li[data-id='{comment_id}']")
    await expect(theirs.locator("> .body > .content")).to_have_text(
        "Hello from Alice", timeout=15_000
    )
    await theirs.locator("> .votes .up").click()
    await expect(theirs.locator("> .votes .score")).to_have_text("1")
    await expect(theirs.locator("> .votes .up")).to_have_class("up chosen")
    voted = time.monotonic()
    await expect(mine.locator("> .votes .score")).to_have_text("1", timeout=15_000)
    seen_after = time.monotonic() - voted

    # A reply from Bob: Alice's page counts it, and opening the thread shows it.
    await theirs.locator("> .body .reply").first.click()
    await theirs.locator("> .body > .reply-form textarea").fill("Hi Alice")
    await theirs.locator("> .body > .reply-form button").click()
    await expect(mine.locator("> .body .show-replies")).to_have_text("1 reply", timeout=15_000)
    await mine.locator("> .body .show-replies").click()
    await expect(mine.locator(".replies .content")).to_have_text("Hi Alice", timeout=15_000)

    # Bob's vote is his after a reload (my_vote in the list), and the sort switcher works.
    await bob.reload()
    await expect(bob.locator("body")).to_have_attribute("data-ready", "1", timeout=30_000)
    await expect(bob.locator(f"li[data-id='{comment_id}'] > .votes .up")).to_have_class("up chosen")
    await bob.select_option("#sort", "new")
    await expect(bob.locator(f"li[data-id='{comment_id}']")).to_be_visible()
    for page in (alice, bob):  # nothing went wrong on either page, at any time
        assert await page.evaluate("window.tallyErrors") == []
        await expect(page.locator("#count")).to_have_text("2 comments")

    image = await alice.screenshot(full_page=True)
    assert len(image) > 10_000  # a page with something on it
    await asyncio.to_thread(save, image)
    print(
        f"browser test: vote seen on the other page after {seen_after:.2f} s;"
        f" whole test {time.monotonic() - started:.1f} s"
    )
