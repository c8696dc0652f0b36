"""The back office in headless Chromium against real processes (web server, matchers, PostgreSQL, Redis).

1. A second operator signs in for the first time (enrolling an authenticator on the page) and approves
   alice's withdrawal: above the four-eyes threshold it only waits. The first operator signs in with their
   code, halts BTC-USDT (the matcher applies it), approves the waiting withdrawal under Money actions, and
   sees the dashboard, saved as a screenshot.
2. A compliance user signs in with their code and downloads a filtered CSV from the export page.

How Chromium is driven: tests/e2e/test_browser.py (its fixtures are used here). Screenshots go to
$EXCHANGE_TEST_ARTIFACTS/browser (default ./test-artifacts/browser): backoffice-*.png.
"""

import csv
import io
from decimal import Decimal as D
from types import SimpleNamespace

import pytest

from exchange.demo import demo_load
from tests.e2e.harness import running_stack, totp_code, wait_for
from tests.e2e.test_browser import CHROMIUM_ARGS, artifacts, browser, chromium  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "backoffice-e2e-pw"


@pytest.fixture
def stack(redis_app):
    """The demo, staff passwords the web process can check, authenticators for the first operator and
    compliance (the second operator enrolls in the browser), alice's withdrawal, and two trades for the
    dashboard's charts; everything in the database before the browser starts (Django refuses database calls
    while Playwright's event loop runs in this thread)."""
    from base64 import b32encode

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from exchange.models import Asset
    from orders.models import Trade
    from tests.matching.conftest import place
    from wallet.services import withdrawal_request

    demo_load(password=PASSWORD)
    users = {user.username: user for user in get_user_model().objects.all()}
    get_user_model().objects.filter(username__in=["operator", "operator2", "compliance", "alice", "bob"]).update(
        password=PBKDF2PasswordHasher().encode(PASSWORD, "backofficesalt", iterations=1000))
    keys = {name: b32encode(TOTPDevice.objects.create(user=users[name], name="authenticator", confirmed=True)
                            .bin_key).decode() for name in ("operator", "compliance")}
    withdrawal = withdrawal_request(user=users["alice"], asset=Asset.objects.get(code="BTC"), amount=D("0.5"),
                                    address="bc1qbrowserwithdrawal")
    with running_stack() as running:
        place(users["alice"], "SELL", price="30000", quantity="0.05")
        place(users["bob"], "BUY", price="30000", quantity="0.02")
        place(users["bob"], "BUY", price="30000", quantity="0.03")
        wait_for(lambda: Trade.objects.count() == 2, timeout_s=30, what="the matcher to trade")
        yield SimpleNamespace(base_url=running.base_url, keys=keys, withdrawal_id=withdrawal.pk)


def sign_in(page, base_url: str, username: str, otp_key: str | None = None) -> None:
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    if otp_key:
        page.fill("#id_otp_token", totp_code(otp_key))
    page.click("#login-form input[type=submit]")


def run_action(page, url: str, object_id, action: str, reason: str) -> None:
    """On a list page: tick one row, pick the action, Go, give the reason, confirm."""
    page.goto(url)
    page.check(f"input[name=_selected_action][value='{object_id}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    page.fill("#id_reason", reason)
    page.click("form input[type=submit]")


def test_two_operators_halt_a_market_and_approve_a_withdrawal(chromium, stack, browser, artifacts):  # noqa: F811
    base = stack.base_url
    second = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    first = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    for page in (first, second):
        page.set_default_timeout(20_000)
    try:
        # The second operator's first sign-in: enroll, then ask to approve (it waits for another person).
        sign_in(second, base, "operator2")
        second.wait_for_selector("[data-testid=otp-qr] svg")
        second.fill("#id_otp_token", totp_code(second.inner_text("[data-testid=otp-key]")))
        second.click("form input[type=submit].default")
        second.wait_for_selector("[data-testid=dashboard]")
        run_action(second, f"{base}/admin/wallet/withdrawal/", stack.withdrawal_id, "approve_selected",
                   "KYC level 2 checked")
        second.wait_for_selector(".messagelist :text('waits for a second staff member')")
        second.screenshot(path=str(artifacts / "backoffice-1-approval-waits.png"), full_page=True)

        # The first operator halts BTC-USDT...
        sign_in(first, base, "operator", stack.keys["operator"])
        first.wait_for_selector("[data-testid=dashboard]")
        first.goto(f"{base}/admin/exchange/market/?q=BTC-USDT")
        market_id = first.get_attribute("input[name=_selected_action]", "value")
        run_action(first, f"{base}/admin/exchange/market/?q=BTC-USDT", market_id, "set_halted",
                   "incident 7: feed outage")
        first.wait_for_selector(".messagelist :text('Halt trading: 1 requested')")

        def halted():
            first.goto(f"{base}/admin/exchange/market/?q=BTC-USDT")
            return "Halted" in first.inner_text("#result_list")

        wait_for(halted, timeout_s=30, interval_s=0.5, what="the matcher to halt BTC-USDT")

        # ... and approves the withdrawal the second operator asked for.
        first.goto(f"{base}/admin/wallet/moneyaction/?status__exact=PENDING")
        request_id = first.get_attribute("input[name=_selected_action]", "value")
        run_action(first, f"{base}/admin/wallet/moneyaction/?status__exact=PENDING", request_id, "approve_selected",
                   "second pair of eyes: address verified")
        first.wait_for_selector(".messagelist :text('1 requested')")
        first.goto(f"{base}/admin/wallet/withdrawal/?status=APPROVED")
        assert "bc1qbrowserwithdrawal" in first.inner_text("#result_list")

        first.goto(f"{base}/admin/")
        markets = first.inner_text("[data-testid=panel-markets]")
        assert "BTC-USDT" in markets and "HALTED" in markets
        assert first.locator("[data-testid=panel-activity] svg.bo-chart").count() >= 4
        assert first.inner_text("[data-testid=approvals-pending]") == "0"
        first.screenshot(path=str(artifacts / "backoffice-2-dashboard.png"), full_page=True)
    except Exception:
        first.screenshot(path=str(artifacts / "backoffice-failure-first.png"), full_page=True)
        second.screenshot(path=str(artifacts / "backoffice-failure-second.png"), full_page=True)
        raise


def test_compliance_exports_a_filtered_csv(chromium, stack, browser, artifacts):  # noqa: F811
    page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
    page.set_default_timeout(20_000)
    try:
        sign_in(page, stack.base_url, "compliance", stack.keys["compliance"])
        page.wait_for_selector("[data-testid=dashboard]")
        page.goto(f"{stack.base_url}/admin/exchange/auditlog/")
        page.click("text=Compliance export")
        page.select_option("#id_table", "audit-logs")
        page.select_option("#id_format", "csv")
        page.fill("#id_action", "WITHDRAWAL_REQUEST,DEPOSIT_CREDIT")
        page.fill("#id_user", "alice")
        page.screenshot(path=str(artifacts / "backoffice-3-export-form.png"), full_page=True)
        with page.expect_download() as download:
            page.click("form input[type=submit]")
        path = download.value.path()
        rows = list(csv.DictReader(io.StringIO(open(path, encoding="utf-8").read())))
    except Exception:
        page.screenshot(path=str(artifacts / "backoffice-failure-compliance.png"), full_page=True)
        raise

    assert download.value.suggested_filename.endswith(".csv")
    assert {row["action"] for row in rows} == {"WITHDRAWAL_REQUEST", "DEPOSIT_CREDIT"}
    assert len([row for row in rows if row["action"] == "DEPOSIT_CREDIT"]) == 3  # alice's three demo deposits
