"""Factories for test data. Money and orders are set up through services, as users would."""

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from exchange.models import Asset, Market


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"trader{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.test")
    password = factory.django.Password("correct-horse-battery")


class AssetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Asset
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"AS{n}")
    name = factory.LazyAttribute(lambda asset: f"Asset {asset.code}")
    precision = 8


class MarketFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Market
        django_get_or_create = ("symbol",)

    base = factory.SubFactory(AssetFactory, code="BTC", name="Bitcoin")
    quote = factory.SubFactory(AssetFactory, code="USDT", name="Tether USD")
    symbol = factory.LazyAttribute(lambda market: f"{market.base.code}-{market.quote.code}")
    tick_size = Decimal("0.01")
    step_size = Decimal("0.00001")
    min_quantity = Decimal("0.00001")
    max_quantity = Decimal("1000")
    min_notional = Decimal("5")
    maker_fee_rate = Decimal("0.001")
    taker_fee_rate = Decimal("0.002")


def api_key_for(user=None, *, permissions=("read",), ip_allowlist=(), label="bot", expires_at=None):
    """(api_key, secret) created through the service, for ``user`` or a new trader."""
    from exchange.apikeys.services import api_key_create

    return api_key_create(
        user=user or UserFactory(), label=label, permissions=permissions, ip_allowlist=ip_allowlist,
        expires_at=expires_at,
    )


def login_staff(client, user):
    """Sign ``client`` (a Django or DRF test client) in as the staff member ``user`` with the second
    factor passed, as the back office's sign-in form does; returns their authenticator."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = (TOTPDevice.objects.filter(user=user, confirmed=True).first()
              or TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True))
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device
