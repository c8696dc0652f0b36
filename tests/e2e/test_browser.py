"""The trading page in headless Chromium against real processes (daphne, matchers,
PostgreSQL, Redis): log in, see an error from the API, place a limit order that rests,
see it in open orders and in the book, cancel it, see it gone; and the page fits a
375px-wide phone.

Chromium is the Debian package (/usr/bin/chromium, or CHROMIUM_PATH), driven by
Playwright's Python package, which downloads no browser. Without Chromium the test
FAILS with how to install it (``make browser-deps``): a skipped browser test would
let a broken page pass unnoticed. Screenshots go to $EXCHANGE_TEST_ARTIFACTS/browser
(default ./test-artifacts/browser).
"""

import os
from pathlib import Path

import pytest

from exchange.demo import demo_load
from tests.e2e.harness import ROOT, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "browser-e2e-pw"


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("EXCHANGE_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
    path.mkdir(parents=True, exist_ok=True)
    (path / "failure.png").unlink(missing_ok=True)
    return path


@pytest.fixture
def chromium() -> str:
    """Checked before the stack starts, so a missing browser fails at once."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `make browser-deps` (apt-get install -y chromium "
            "chromium-driver, as root or with passwordless sudo) or set CHROMIUM_PATH.", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright's Python package is missing: pip install -e '.[dev]'", pytrace=False)
    return CHROMIUM


@pytest.fixture
def browser(chromium, stack):
    """Started after the stack: while Playwright runs, its event loop is running in this
    thread, and Django refuses database calls (the stack's setup makes some)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def stack(redis_app):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    demo_load(password=PASSWORD)
    # The web process checks passwords with the base settings' hashers, not the tests' fast MD5.
    get_user_model().objects.filter(username="alice").update(password=PBKDF2PasswordHasher().encode(PASSWORD, "browsertestsalt", iterations=1000))
    with running_stack() as running:
        yield running


BOOK_HAS_PRICE = """([side, price]) => Array.from(document.querySelectorAll(`#orderbook-${side} tr[data-price]`))
    .some(row => Number(row.dataset.price) === price)"""


def test_log_in_place_see_cancel(chromium, stack, browser, artifacts):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{stack.base_url}/")
        assert page.inner_text("[data-testid=brand-name]") == "Exchange"
        page.fill("#login-username", "alice")
        page.fill("#login-password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#user-box", state="visible")
        assert page.inner_text("#user-name") == "alice"
        page.click("#tab-balances")
        page.wait_for_selector("#balances tr[data-asset=USDT]")
        assert "100000" in page.inner_text("#balances tr[data-asset=USDT]")
        page.click("#tab-open")
        # The page is on the WebSocket (/ws/), not polling.
        page.wait_for_selector("#conn-status:text-is('live')")
        page.screenshot(path=str(artifacts / "01-signed-in.png"), full_page=True)

        # The API's error reaches the form, on the field it names.
        page.fill("#order-price", "50000.001")
        page.fill("#order-quantity", "0.01")
        page.click("#order-submit")
        page.wait_for_selector("#order-error:has-text('INVALID_TICK_SIZE')")
        assert page.get_attribute("#order-price", "aria-invalid") == "true"

        # A buy far below the (empty) market rests in the book.
        page.fill("#order-price", "50000")
        page.click("#order-submit")
        page.wait_for_selector("#order-message:has-text('accepted')")
        order_id = page.inner_text("#order-message").split()[1]
        row = f"#open-orders tr[data-order-id='{order_id}']"
        page.wait_for_selector(f"{row}[data-status=NEW]")
        page.wait_for_function(BOOK_HAS_PRICE, arg=["bids", 50000])
        assert "mine" in page.get_attribute("#orderbook-bids tr[data-price]", "class")
        page.click("#tab-balances")
        page.wait_for_function(
            "() => { const row = document.querySelector('#balances tr[data-asset=USDT]');"
            " return row && Number(row.cells[2].innerText) === 500; }")  # held: 50000 x 0.01
        page.click("#tab-open")
        page.screenshot(path=str(artifacts / "02-order-resting.png"), full_page=True)

        page.click(f"{row} button.cancel")
        page.wait_for_selector(row, state="detached")
        page.wait_for_function(f"!({BOOK_HAS_PRICE})(['bids', 50000])")
        page.click("#tab-history")
        page.wait_for_selector(f"#order-history tr[data-order-id='{order_id}'][data-status=CANCELED]")
        page.screenshot(path=str(artifacts / "03-canceled.png"), full_page=True)

        # A phone: everything stacks, nothing scrolls sideways.
        page.set_viewport_size({"width": 375, "height": 800})
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts / "04-phone-375px.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert page.is_visible("#order-form") and page.is_visible("#chart")
    except Exception:
        page.screenshot(path=str(artifacts / "failure.png"), full_page=True)
        raise
    finally:
        page.close()
    assert problems == [], f"JavaScript errors on the page: {problems}"
