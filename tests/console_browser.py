"""The console's tests in a real browser: Debian's chromium driven by Playwright (never a downloaded
browser), axe-core's accessibility checks in the page, screenshots of every page, and signing in."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# axe-core impacts that fail a page (axe rates each violation minor, moderate, serious or critical).
FAILING = {"serious", "critical"}


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def person(browser: Browser, base: str) -> Iterator[Page]:
    """A page of its own (cookies included), the size of a hospital workstation's screen."""
    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=base)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        assert not errors, errors
    finally:
        context.close()


def sign_in(page: Page, name: str, password: str) -> None:
    """Open the console and sign in with the form."""
    page.goto("/console")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page) -> None:
    """Sign out with the button in the header."""
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to the DoctorAI console")).to_be_visible()


def show(page: Page, hash_route: str, heading: str | re.Pattern[str]) -> None:
    """Go to a page of the console and wait for its heading."""
    page.goto(f"/console#/{hash_route}")
    expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()


def accessible(page: Page) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in FAILING]
    assert not bad, "\n".join(f"{v['id']} ({v['impact']}): {v['help']} {[n['target'] for n in v['nodes']]}" for v in bad)


def screenshot(page: Page, folder: Path, name: str) -> Path:
    """The whole page as a PNG in `folder`."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
