"""PASSWORD_CHANGE rows, whatever door a password is set through.

Django calls ``password_changed(password, user)`` on every configured
password validator once a new password is saved: the back office's user
form and own-password page, ``manage.py changepassword``, registration,
any future API. (``createsuperuser`` hashes the password it creates the
account with directly, so no call comes from it: its USER_CREATE row,
``exchange.cli``, records the account.) ``PasswordChangeAudit``
is listed in AUTH_PASSWORD_VALIDATORS for that call only (it accepts every
password). Who changed it and from where come from the request being
served, if any (``exchange.audit.middleware``); otherwise the row names the
running process. Neither the password nor its hash is recorded.
"""

from __future__ import annotations

from exchange.audit import actions
from exchange.audit.middleware import current_request
from exchange.audit.services import audit_context, audit_log_record


class PasswordChangeAudit:
    def validate(self, password, user=None):
        return None

    def get_help_text(self) -> str:
        return "Password changes are recorded in the audit trail (never the password itself)."

    def password_changed(self, password, user=None):
        if user is None or user.pk is None:
            return
        request = current_request()
        context = audit_context(request) if request is not None else {}
        audit_log_record(action=actions.PASSWORD_CHANGE, object_type="auth.user", object_id=user.pk,
                         subject_user=user, after={"usable": user.has_usable_password()}, **context)
