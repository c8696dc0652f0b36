"""The audit trail's action codes: stable UPPER_SNAKE names, one per kind of mutation.

Codes are data, not a closed enum: a writer may record a code not listed
here (the database only checks its shape), but every code the platform
writes is listed in ``ACTIONS`` with what it means, and docs/AUDIT.md shows
the same table. Exports and the back office filter by these names, so a code
never changes meaning once released.
"""

from __future__ import annotations

# Orders (written by the order services in the placement transaction).
PLACE_ORDER = "PLACE_ORDER"
CANCEL_ORDER = "CANCEL_ORDER"
AMEND_ORDER = "AMEND_ORDER"

# Accounts and sessions.
USER_REGISTER = "USER_REGISTER"
LOGIN = "LOGIN"
LOGOUT = "LOGOUT"
LOGIN_FAILED = "LOGIN_FAILED"
PASSWORD_CHANGE = "PASSWORD_CHANGE"
USER_CREATE = "USER_CREATE"
USER_UPDATE = "USER_UPDATE"
USER_DELETE = "USER_DELETE"
ROLE_CHANGE = "ROLE_CHANGE"
ROLE_CREATE = "ROLE_CREATE"
ROLE_DELETE = "ROLE_DELETE"
USER_DEACTIVATE = "USER_DEACTIVATE"
USER_REACTIVATE = "USER_REACTIVATE"
TOTP_ENABLE = "TOTP_ENABLE"
TOTP_DISABLE = "TOTP_DISABLE"
LOGIN_LOCKOUT_RESET = "LOGIN_LOCKOUT_RESET"

# API keys.
API_KEY_CREATE = "API_KEY_CREATE"
API_KEY_REVOKE = "API_KEY_REVOKE"
API_KEYS_REENCRYPT = "API_KEYS_REENCRYPT"

# Money.
DEPOSIT_CREDIT = "DEPOSIT_CREDIT"
WITHDRAWAL_REQUEST = "WITHDRAWAL_REQUEST"
WITHDRAWAL_APPROVE = "WITHDRAWAL_APPROVE"
WITHDRAWAL_REJECT = "WITHDRAWAL_REJECT"
WITHDRAWAL_COMPLETE = "WITHDRAWAL_COMPLETE"
BALANCE_ADJUST = "BALANCE_ADJUST"
MONEY_ACTION_REQUEST = "MONEY_ACTION_REQUEST"
MONEY_ACTION_APPROVE = "MONEY_ACTION_APPROVE"
MONEY_ACTION_REJECT = "MONEY_ACTION_REJECT"

# Venue configuration.
ASSET_CREATE = "ASSET_CREATE"
ASSET_UPDATE = "ASSET_UPDATE"
ASSET_DELETE = "ASSET_DELETE"
MARKET_CREATE = "MARKET_CREATE"
MARKET_UPDATE = "MARKET_UPDATE"
MARKET_DELETE = "MARKET_DELETE"
MARKET_HALT = "MARKET_HALT"
MARKET_RESUME = "MARKET_RESUME"
MARKET_CANCEL_ONLY = "MARKET_CANCEL_ONLY"
MARKET_POST_ONLY = "MARKET_POST_ONLY"
MARKET_STATUS_APPLIED = "MARKET_STATUS_APPLIED"
MARKET_STATUS_REJECTED = "MARKET_STATUS_REJECTED"
FEE_TIER_CREATE = "FEE_TIER_CREATE"
FEE_TIER_UPDATE = "FEE_TIER_UPDATE"
FEE_TIER_DELETE = "FEE_TIER_DELETE"
FEE_OVERRIDE_CREATE = "FEE_OVERRIDE_CREATE"
FEE_OVERRIDE_UPDATE = "FEE_OVERRIDE_UPDATE"
FEE_OVERRIDE_DELETE = "FEE_OVERRIDE_DELETE"
BRANDING_CREATE = "BRANDING_CREATE"
BRANDING_UPDATE = "BRANDING_UPDATE"
BRANDING_DELETE = "BRANDING_DELETE"

# Risk (written by the risk services).
RISK_LIMIT_SET = "RISK_LIMIT_SET"
RISK_LIMIT_CLEAR = "RISK_LIMIT_CLEAR"
RISK_RESTRICTION_SET = "RISK_RESTRICTION_SET"
RISK_RESTRICTION_LIFT = "RISK_RESTRICTION_LIFT"
SURVEILLANCE_RULE_CREATE = "SURVEILLANCE_RULE_CREATE"
SURVEILLANCE_RULE_UPDATE = "SURVEILLANCE_RULE_UPDATE"
SURVEILLANCE_RULE_DELETE = "SURVEILLANCE_RULE_DELETE"
SURVEILLANCE_EXEMPTION_CREATE = "SURVEILLANCE_EXEMPTION_CREATE"
SURVEILLANCE_EXEMPTION_UPDATE = "SURVEILLANCE_EXEMPTION_UPDATE"
SURVEILLANCE_EXEMPTION_DELETE = "SURVEILLANCE_EXEMPTION_DELETE"
ACCOUNT_LINK_CREATE = "ACCOUNT_LINK_CREATE"
ACCOUNT_LINK_DELETE = "ACCOUNT_LINK_DELETE"

# Compliance.
EXPORT = "EXPORT"
LEGAL_HOLD_SET = "LEGAL_HOLD_SET"
LEGAL_HOLD_RELEASE = "LEGAL_HOLD_RELEASE"
RETENTION_PURGE = "RETENTION_PURGE"

# A market status change requested in the back office or from the command line.
MARKET_STATUS_ACTIONS = {
    "HALTED": MARKET_HALT,
    "TRADING": MARKET_RESUME,
    "CANCEL_ONLY": MARKET_CANCEL_ONLY,
    "POST_ONLY": MARKET_POST_ONLY,
}

ACTIONS: dict[str, str] = {
    PLACE_ORDER: "An order was accepted (written with the order, in its placement transaction).",
    CANCEL_ORDER: "A cancel of an order was requested.",
    AMEND_ORDER: "An amendment of an order's price or quantity was requested.",
    USER_REGISTER: "A user registered through the API.",
    LOGIN: "A user signed in (API or back office).",
    LOGOUT: "A user signed out.",
    LOGIN_FAILED: "A sign-in failed; `after.username` is the name that was tried.",
    PASSWORD_CHANGE: "A user's password was set or changed (any door: back office, API, manage.py changepassword).",
    USER_CREATE: "A user was created in the back office, by manage.py createsuperuser or by the demo loader.",
    USER_UPDATE: "A user's details (not their roles) were edited in the back office.",
    USER_DELETE: "A user was deleted in the back office.",
    ROLE_CHANGE: "A user's roles or staff flags (groups, is_staff, is_superuser, permissions), or a role's "
                 "permissions, changed.",
    ROLE_CREATE: "A role (group) was created.",
    ROLE_DELETE: "A role (group) was deleted.",
    USER_DEACTIVATE: "A staff member deactivated a user (their open orders are cancelled, their live connections "
                     "closed).",
    USER_REACTIVATE: "A staff member reactivated a user.",
    TOTP_ENABLE: "A user turned on two-factor authentication (confirmed an authenticator).",
    TOTP_DISABLE: "A user's authenticator was removed, by the user or reset by a staff member (`after.reason`).",
    LOGIN_LOCKOUT_RESET: "A staff member lifted a sign-in lockout (a username and address that failed too often).",
    API_KEY_CREATE: "An API key was created (its secret is never recorded).",
    API_KEY_REVOKE: "An API key was revoked, by its owner or in the back office.",
    API_KEYS_REENCRYPT: "Every stored API key secret was re-encrypted with the current key.",
    DEPOSIT_CREDIT: "A deposit was credited (by an operator or the custody webhook).",
    WITHDRAWAL_REQUEST: "A user requested a withdrawal (funds held).",
    WITHDRAWAL_APPROVE: "An operator approved a withdrawal (funds moved to the operator).",
    WITHDRAWAL_REJECT: "An operator rejected a withdrawal (funds released).",
    WITHDRAWAL_COMPLETE: "An operator recorded that a withdrawal was sent.",
    BALANCE_ADJUST: "An operator adjusted a user's balance.",
    MONEY_ACTION_REQUEST: "A staff member asked for a money action above the four-eyes threshold; it waits for a "
                          "second staff member.",
    MONEY_ACTION_APPROVE: "A second staff member approved a waiting money action, which ran (its own row follows).",
    MONEY_ACTION_REJECT: "A second staff member rejected a waiting money action (or it was canceled because its "
                         "withdrawal was rejected); no money moved.",
    ASSET_CREATE: "An asset was listed.",
    ASSET_UPDATE: "An asset was edited.",
    ASSET_DELETE: "An asset was deleted.",
    MARKET_CREATE: "A market was listed.",
    MARKET_UPDATE: "A market's terms were edited.",
    MARKET_DELETE: "A market was deleted.",
    MARKET_HALT: "An operator asked for a market to be halted.",
    MARKET_RESUME: "An operator asked for a market to resume trading.",
    MARKET_CANCEL_ONLY: "An operator asked for a market to accept cancels only.",
    MARKET_POST_ONLY: "An operator asked for a market to accept post-only orders only.",
    MARKET_STATUS_APPLIED: "A market's matcher applied a requested status change, in sequence with its orders.",
    MARKET_STATUS_REJECTED: "A market's matcher refused a requested status change.",
    FEE_TIER_CREATE: "A VIP fee tier was created.",
    FEE_TIER_UPDATE: "A VIP fee tier was edited.",
    FEE_TIER_DELETE: "A VIP fee tier was deleted.",
    FEE_OVERRIDE_CREATE: "A user's fee override was created.",
    FEE_OVERRIDE_UPDATE: "A user's fee override was edited.",
    FEE_OVERRIDE_DELETE: "A user's fee override was deleted.",
    BRANDING_CREATE: "A branding record was created.",
    BRANDING_UPDATE: "The branding was edited.",
    BRANDING_DELETE: "A branding record was deleted.",
    RISK_LIMIT_SET: "A risk limit was set or changed.",
    RISK_LIMIT_CLEAR: "A risk limit was removed.",
    RISK_RESTRICTION_SET: "A user or market was restricted (frozen, cancel-only, halted by risk).",
    RISK_RESTRICTION_LIFT: "A risk restriction was lifted.",
    SURVEILLANCE_RULE_CREATE: "A surveillance rule's settings were added (for a market, or the default).",
    SURVEILLANCE_RULE_UPDATE: "A surveillance rule's settings were changed (enabled, automatic action, thresholds).",
    SURVEILLANCE_RULE_DELETE: "A surveillance rule's settings were removed (the default applies again).",
    SURVEILLANCE_EXEMPTION_CREATE: "A user was exempted from a surveillance rule.",
    SURVEILLANCE_EXEMPTION_UPDATE: "A surveillance exemption was edited.",
    SURVEILLANCE_EXEMPTION_DELETE: "A surveillance exemption was removed.",
    ACCOUNT_LINK_CREATE: "Two accounts were linked (trades between them count as self-dealing).",
    ACCOUNT_LINK_DELETE: "An account link was removed.",
    EXPORT: "Compliance data was exported (`object_id` names the table; `after` the filters and format).",
    LEGAL_HOLD_SET: "A legal hold was placed.",
    LEGAL_HOLD_RELEASE: "A legal hold was released.",
    RETENTION_PURGE: "The retention task deleted rows past their retention period (`after` says how many).",
}
