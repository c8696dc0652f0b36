from django.contrib.admin.apps import AdminConfig


class BackOfficeAdminConfig(AdminConfig):
    """django.contrib.admin with the back office's site (exchange.backoffice.site) as ``admin.site``."""

    default_site = "exchange.backoffice.site.BackOfficeSite"
