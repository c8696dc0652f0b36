"""The branding record: defaults, validation, one active record, who may edit it in the
back office, and the trading page and admin header that carry it."""

import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from exchange.branding import DEFAULT_BRANDING, Branding, branding_get_active, branding_save
from exchange.demo import demo_load
from exchange.roles import COMPLIANCE, OPERATORS, SUPPORT, roles_sync

pytestmark = pytest.mark.django_db

ACME = dict(
    operator_name="Acme Digital Exchange", short_name="Acme", logo_url="https://cdn.acme.example/logo.svg",
    primary_colour="#123abc", accent_colour="#fedcba", background_colour="#f8f9fa",
    support_email="help@acme.example", footer_text="Acme Ltd, licensed by nobody in particular",
)


def _page_config(response) -> dict:
    match = re.search(rb'<script id="trading-config" type="application/json">(.*?)</script>', response.content, re.S)
    assert match, "the page embeds its configuration"
    return json.loads(match.group(1))


def test_defaults_without_any_record(client):
    """A fresh installation has no branding row; the page still renders, with the defaults."""
    assert branding_get_active() == DEFAULT_BRANDING

    response = client.get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert f"--primary: {DEFAULT_BRANDING.primary_colour};" in page
    assert 'data-testid="brand-name">Exchange<' in page
    assert _page_config(response)["symbol"] is None  # no market listed yet


def test_page_carries_the_active_branding(client):
    """Name, logo, colours, footer and support e-mail of the active record reach the page; a
    light background switches the page to dark text."""
    branding_save(branding=Branding(**ACME))
    demo_load(password="branding-test-pw")

    page = client.get("/").content.decode()

    assert "<title>BTC-USDT | Acme Digital Exchange</title>" in page
    assert 'data-testid="brand-name">Acme Digital Exchange<' in page
    assert 'src="https://cdn.acme.example/logo.svg"' in page
    for name, colour in (("primary", "#123abc"), ("accent", "#fedcba"), ("background", "#f8f9fa")):
        assert f"--{name}: {colour};" in page
    assert '<body class="light">' in page
    assert "Acme Ltd, licensed by nobody in particular" in page and "mailto:help@acme.example" in page


def test_text_is_escaped(client):
    """Branding text is operator input: it is escaped in the page, never markup."""
    branding_save(branding=Branding(**{**ACME, "operator_name": "<script>alert(1)</script>"}))

    page = client.get("/").content.decode()

    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("field, value", [
    ("primary_colour", "red"), ("accent_colour", "#fff"), ("background_colour", "#12345g"),
    ("primary_colour", "#123456;}body{"), ("logo_url", "javascript:alert(1)"), ("logo_url", "//evil.example/x.png"),
    ("support_email", "not-an-email"),
])
def test_invalid_values_are_refused(field, value):
    with pytest.raises(ValidationError) as error:
        branding_save(branding=Branding(**{**ACME, field: value}))
    assert field in error.value.message_dict
    assert not Branding.objects.exists()


def test_database_refuses_a_colour_that_is_not_hex():
    """The colours go into a <style> block: the database itself keeps anything but #rrggbb out."""
    with pytest.raises(IntegrityError), transaction.atomic():
        Branding.objects.create(**{**ACME, "primary_colour": "#12345z"})


def test_one_active_record():
    """Saving an active record deactivates the one before; the partial unique index forbids two."""
    first = branding_save(branding=Branding(**ACME))
    second = branding_save(branding=Branding(**{**ACME, "operator_name": "Beta Exchange"}))

    first.refresh_from_db()
    assert (first.is_active, second.is_active) == (False, True)
    assert branding_get_active().operator_name == "Beta Exchange"
    with pytest.raises(IntegrityError), transaction.atomic():
        Branding.objects.filter(pk=first.pk).update(is_active=True)

    branding_save(branding=Branding(**{**ACME, "operator_name": "Draft", "is_active": False}))
    assert branding_get_active().operator_name == "Beta Exchange"


def test_operator_edits_branding_in_the_admin(client, staff):
    """Operators may add and change branding; the admin form goes through branding_save."""
    staff(OPERATORS)
    old = branding_save(branding=Branding(**ACME))
    form = {**ACME, "operator_name": "Gamma Exchange", "is_active": "on"}

    response = client.post("/admin/exchange/branding/add/", form)

    assert response.status_code == 302, response.content[:2000]
    old.refresh_from_db()
    assert not old.is_active and branding_get_active().operator_name == "Gamma Exchange"
    bad = client.post("/admin/exchange/branding/add/", {**form, "primary_colour": "blue"})
    assert bad.status_code == 200 and b"#rrggbb" in bad.content
    assert Branding.objects.count() == 2


def test_compliance_only_views_branding_and_support_does_not_see_it(client, staff):
    """Compliance reads the branding but cannot edit it; Support (users, orders, trades) gets 403."""
    branding = branding_save(branding=Branding(**ACME))
    staff(SUPPORT)
    assert client.get(f"/admin/exchange/branding/{branding.pk}/change/").status_code == 403
    user = staff(COMPLIANCE)

    assert user.has_perm("exchange.view_branding")
    assert not user.has_perm("exchange.change_branding") and not user.has_perm("exchange.add_branding")
    assert client.get(f"/admin/exchange/branding/{branding.pk}/change/").status_code == 200
    response = client.post(f"/admin/exchange/branding/{branding.pk}/change/", {**ACME, "operator_name": "Hijacked"})
    assert response.status_code == 403
    assert client.post("/admin/exchange/branding/add/", ACME).status_code == 403
    assert branding_get_active().operator_name == ACME["operator_name"]


def test_operators_cannot_delete_branding():
    operators = roles_sync()[OPERATORS]
    codenames = set(operators.permissions.filter(content_type__model="branding").values_list("codename", flat=True))
    assert codenames == {"add_branding", "change_branding", "view_branding"}


def test_admin_header_carries_the_operator_name(client, staff):
    branding_save(branding=Branding(**ACME))
    staff(OPERATORS)

    page = client.get("/admin/").content.decode()

    assert "Acme Digital Exchange back office" in page
    assert "<title>Site administration | Acme Digital Exchange back office</title>" in page or \
        "| Acme Digital Exchange back office</title>" in page
    assert "--header-bg:#123abc" in page


def test_trade_urls_choose_the_market(client):
    """/trade/<symbol>/ selects a market; lower case is redirected to the canonical symbol and an
    unknown one to the home page."""
    demo_load(password="branding-test-pw")

    page = client.get("/trade/ETH-USDT/")
    assert page.status_code == 200
    config = _page_config(page)
    assert config["symbol"] == "ETH-USDT" and config["user"] is None
    assert {m["symbol"] for m in config["markets"]} == {"BTC-USDT", "ETH-USDT"}
    assert b'<option value="ETH-USDT" selected>' in page.content
    assert client.get("/trade/eth-usdt/")["Location"] == "/trade/ETH-USDT/"
    assert client.get("/trade/NOPE-USDT/")["Location"] == "/"
    assert client.post("/").status_code == 405


def test_page_knows_the_signed_in_user_and_sets_the_csrf_cookie(client):
    demo_load(password="branding-test-pw")
    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.get(username="alice")
    client.force_login(alice)

    response = client.get("/")

    assert _page_config(response)["user"] == {"id": alice.id, "username": "alice"}
    assert "csrftoken" in response.cookies


def test_static_files_are_served(client):
    """The page's script and stylesheet are served (WhiteNoise from the app's static folder)."""
    from django.contrib.staticfiles import finders

    for name in ("trading/app.js", "trading/app.css"):
        assert finders.find(name), name
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and b"".join(response.streaming_content)
    page = client.get("/").content.decode()
    assert 'src="/static/trading/app.js"' in page and 'href="/static/trading/app.css"' in page
