"""The demo's market maker is exempted from surveillance explicitly, once."""

import pytest

from exchange.demo import MARKET_MAKER_USERNAME, demo_load
from risk.models import SurveillanceExemption

pytestmark = pytest.mark.django_db


def test_the_demo_exempts_its_market_maker_from_every_rule():
    """demo_load records one exemption of every rule for ``maker``, with its reason; loading the
    demo again adds nothing."""
    demo_load(password="first-password-1")
    demo_load(password="first-password-1")
    exemption = SurveillanceExemption.objects.get()
    assert (exemption.user.username, exemption.kind) == (MARKET_MAKER_USERNAME, "")
    assert "on purpose" in exemption.reason and exemption.created_by.username == "operator"
