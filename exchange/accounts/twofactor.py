"""The TOTP second factor: required for staff, available to traders (django-otp's ``TOTPDevice``).

A user has at most one confirmed device (an authenticator app). Enrolling is
two steps: ``totp_enroll_begin`` makes an unconfirmed device whose key the
user scans (a QR code of ``device.config_url``) or types in, and
``totp_enroll_confirm`` confirms it with a first code (audited
``TOTP_ENABLE``). From then on every sign-in needs a code
(``totp_verify``), and so do the step-ups of ``exchange.accounts.stepup``.

A session that signed in with a code carries the device
(``django_otp.DEVICE_ID_SESSION_KEY``, set by ``otp_session_login``):
``session_verified(request)`` is what the back office and the API require
of staff. Staff enroll at their first sign-in to the back office, which
allows them nothing else until they have.

A wrong code counts as a failed sign-in (``user_login_failed``): it is
audited (``LOGIN_FAILED``) and counts towards the lockout of
``exchange.accounts.lockout``; the device itself also slows down repeated
failures (django-otp's throttling) and accepts each code once.
"""

from __future__ import annotations

import io

from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp import login as django_otp_login
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError

DEVICE_NAME = "authenticator"
TOKEN_LENGTH_MAX = 8


def totp_device(user) -> TOTPDevice | None:
    """The user's confirmed device, or None."""
    if user is None or not user.is_authenticated:
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id").first()


def invalid_otp() -> ApplicationError:
    return ApplicationError("INVALID_OTP", "The authenticator code is wrong or was already used.", field="otp")


@transaction.atomic
def totp_enroll_begin(*, user) -> TOTPDevice:
    """A new unconfirmed device for ``user`` (replacing any earlier unconfirmed one); 409
    TOTP_ALREADY_ENABLED when a confirmed one exists."""
    if totp_device(user) is not None:
        raise ApplicationError("TOTP_ALREADY_ENABLED", "Two-factor authentication is already on for this account.",
                               status_code=409)
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def totp_pending(user) -> TOTPDevice | None:
    """The device ``totp_enroll_begin`` made and nobody confirmed yet."""
    return TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()


@transaction.atomic
def totp_enroll_confirm(*, user, token: str, audit: dict | None = None) -> TOTPDevice:
    """Confirm the pending device with its first code (400 INVALID_OTP, 409 TOTP_NOT_STARTED)."""
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("-id").first()
    if device is None:
        raise ApplicationError("TOTP_NOT_STARTED", "Start the set-up first: no authenticator is waiting for a code.",
                               status_code=409)
    if not _token_ok(device, token):
        raise invalid_otp()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    audit_log_record(action=actions.TOTP_ENABLE, object_type="otp_totp.totpdevice", object_id=device.pk,
                     subject_user=user, after={"device": device.name}, **audit_origin(audit, user=user))
    return device


def totp_verify(*, user, token: str, request=None) -> TOTPDevice:
    """The user's confirmed device if ``token`` is a valid, unused code of it; otherwise a failed
    sign-in is signalled (audit, lockout) and 400 INVALID_OTP raised (TOTP_NOT_ENABLED without a device)."""
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).order_by("id").first()
        if device is None:
            raise ApplicationError("TOTP_NOT_ENABLED", "Two-factor authentication is not on for this account.",
                                   field="otp")
        verified = _token_ok(device, token)
    if not verified:
        user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=request)
        raise invalid_otp()
    return device


def _token_ok(device: TOTPDevice, token) -> bool:
    token = str(token or "").strip()
    return bool(token) and len(token) <= TOKEN_LENGTH_MAX and token.isdigit() and device.verify_token(token)


@transaction.atomic
def totp_disable(*, user, actor=None, reason: str = "", audit: dict | None = None) -> int:
    """Remove the user's devices (the user turning it off, or a staff member resetting a lost
    device, with a reason); returns how many. Sessions verified with them no longer count."""
    devices = list(TOTPDevice.objects.select_for_update().filter(user=user).order_by("id"))
    if not devices:
        return 0
    if actor is not None and actor.pk != user.pk and not (reason or "").strip():
        raise ApplicationError("REASON_REQUIRED", "Say why the user's authenticator is reset.", field="reason")
    TOTPDevice.objects.filter(pk__in=[device.pk for device in devices]).delete()
    staff = actor if actor is not None and actor.pk != user.pk else None
    audit_log_record(action=actions.TOTP_DISABLE, object_type="otp_totp.totpdevice", object_id=devices[0].pk,
                     subject_user=user, before={"devices": len(devices)},
                     after={"reason": reason.strip()} if staff else None,
                     **audit_origin(audit, staff=staff, user=None if staff else user))
    return len(devices)


def otp_session_login(request, device: TOTPDevice) -> None:
    """Mark the session of ``request`` (signed in as the device's user) as verified with ``device``."""
    django_otp_login(request, device)
    request._otp_verified = True


def session_verified(request) -> bool:
    """Whether the signed-in user of ``request`` (a Django HttpRequest) passed the second factor in
    this session with a device that still exists (one query, then remembered for the request)."""
    cached = getattr(request, "_otp_verified", None)
    if cached is not None:
        return cached
    verified = False
    user = getattr(request, "user", None)
    persistent_id = request.session.get(DEVICE_ID_SESSION_KEY) if hasattr(request, "session") else None
    if persistent_id and user is not None and user.is_authenticated:
        device = Device.from_persistent_id(persistent_id)
        verified = device is not None and device.user_id == user.pk and device.confirmed
    request._otp_verified = verified
    return verified


def qr_code_svg(device: TOTPDevice) -> str:
    """The device's ``otpauth://`` URI as an SVG QR code, for the enrollment page."""
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


def base32_key(device: TOTPDevice) -> str:
    """The key as authenticator apps take it typed in (base32, in groups of four)."""
    from base64 import b32encode

    text = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))
