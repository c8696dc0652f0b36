"""The operator's branding: name, logo, colours and footer of the trading page and back office.

One record is active at a time (``is_active``; a partial unique constraint
keeps it to one). Without any, ``branding_get_active()`` returns sane
defaults, so a fresh installation has a usable page. Colours are
``#rrggbb`` only: they are written into a ``<style>`` block, so nothing but
six hex digits may get there. The logo is a URL (absolute http(s) or a
site-relative path); uploaded files are not kept, since the platform has no
media storage.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Q

COLOUR_VALIDATOR = RegexValidator(r"^#[0-9a-fA-F]{6}\Z", "Use a colour as #rrggbb, e.g. #0b7285.")
LOGO_URL_VALIDATOR = RegexValidator(
    r"^(https?://[^\s\"'<>]+|/(?!/)[^\s\"'<>]*)\Z",
    "Use an http(s):// address or a path on this site starting with / (not //).",
)


class Branding(models.Model):
    operator_name = models.CharField(max_length=100, help_text="Shown in titles, e.g. 'Acme Exchange'.")
    short_name = models.CharField(max_length=24, help_text="Shown where space is short, e.g. 'Acme'.")
    logo_url = models.CharField(
        max_length=500, blank=True, validators=[LOGO_URL_VALIDATOR],
        help_text="An http(s) address or a path on this site (e.g. /static/logo.svg); empty: the short name.",
    )
    primary_colour = models.CharField(max_length=7, default="#0b7285", validators=[COLOUR_VALIDATOR])
    accent_colour = models.CharField(max_length=7, default="#f59f00", validators=[COLOUR_VALIDATOR])
    background_colour = models.CharField(max_length=7, default="#10151c", validators=[COLOUR_VALIDATOR])
    support_email = models.EmailField(blank=True)
    footer_text = models.CharField(max_length=300, blank=True)
    is_active = models.BooleanField(default=True, help_text="The one record the site uses; activating one deactivates the others.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "exchange"
        verbose_name = "branding"
        verbose_name_plural = "branding"
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="branding_one_active"),
            models.CheckConstraint(
                condition=Q(primary_colour__regex=r"^#[0-9a-fA-F]{6}$")
                & Q(accent_colour__regex=r"^#[0-9a-fA-F]{6}$")
                & Q(background_colour__regex=r"^#[0-9a-fA-F]{6}$"),
                name="branding_colours_hex",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operator_name}{' (active)' if self.is_active else ''}"

    def get_constraints(self):
        # Validation (forms, full_clean) skips the one-active rule: branding_save
        # deactivates the previous record before saving a new active one, and
        # the database still enforces the rule.
        return [
            (model, [c for c in constraints if c.name != "branding_one_active"])
            for model, constraints in super().get_constraints()
        ]


@dataclass(frozen=True)
class BrandingView:
    """What templates read: the active record's values or the defaults."""

    operator_name: str = "Exchange"
    short_name: str = "Exchange"
    logo_url: str = ""
    primary_colour: str = "#0b7285"
    accent_colour: str = "#f59f00"
    background_colour: str = "#10151c"
    support_email: str = ""
    footer_text: str = ""

    @property
    def is_dark(self) -> bool:
        """Whether the background is dark (relative luminance under 0.4), so text goes light."""
        red, green, blue = (int(self.background_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
        return 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.4


DEFAULT_BRANDING = BrandingView()


def branding_get_active() -> BrandingView:
    record = Branding.objects.filter(is_active=True).first()
    if record is None:
        return DEFAULT_BRANDING
    return BrandingView(**{name: getattr(record, name) for name in BrandingView.__dataclass_fields__})


def branding_context(request) -> dict:
    """Template context processor: ``{{ branding.operator_name }}`` everywhere."""
    return {"branding": branding_get_active()}


@transaction.atomic
def branding_save(*, branding: Branding) -> Branding:
    """Save ``branding``; if it is active, the previously active record stops being so.

    The other records are deactivated first (locked, so two operators saving
    at once cannot both win), then this one is saved: the partial unique
    constraint never sees two active records.
    """
    if branding.is_active:
        others = Branding.objects.select_for_update().filter(is_active=True)
        if branding.pk:
            others = others.exclude(pk=branding.pk)
        for other in others.order_by("id"):
            other.is_active = False
            other.save(update_fields=["is_active", "updated_at"])
    branding.full_clean()
    branding.save()
    return branding
