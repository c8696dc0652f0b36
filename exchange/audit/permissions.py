"""Who may export compliance data: members of the Compliance role (exchange.roles), and nobody else.

Not superusers by default, not operators: exports hold every user's
personal and financial data, and the role is what a regulator's request is
answered under. Each export is itself audited (EXPORT).
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from exchange.roles import COMPLIANCE


def is_compliance(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.groups.filter(name=COMPLIANCE).exists())


class CompliancePermission(BasePermission):
    code = "COMPLIANCE_ONLY"
    message = "Only members of the Compliance role may export compliance data."

    def has_permission(self, request, view) -> bool:
        return is_compliance(request.user)
