"""``manage.py createsuperuser``, Django's own, with the new account in the audit trail.

The back office writes USER_CREATE for the users it creates, and the demo for
its own; the command line is the third door, and the one that makes the most
privileged accounts. Django's command is unchanged (its prompts, options and
checks): while it runs, the account it saves is recorded as USER_CREATE by
the process ("manage.py createsuperuser"), with its fields as saved and no
password. (Django sets that first password without the call that writes
PASSWORD_CHANGE from the other doors, ``exchange.audit.passwords``.)
"""

from __future__ import annotations

from django.contrib.auth.management.commands import createsuperuser
from django.db.models.signals import post_save

from exchange.audit import actions
from exchange.audit.services import audit_log_record, snapshot


class Command(createsuperuser.Command):
    def handle(self, *args, **options):
        def saved(sender, instance, created, **kwargs):
            if created:
                audit_log_record(action=actions.USER_CREATE, object_type=instance._meta.label_lower,
                                 object_id=instance.pk, subject_user=instance, after=snapshot(instance))

        post_save.connect(saved, sender=self.UserModel, weak=False)
        try:
            return super().handle(*args, **options)
        finally:
            post_save.disconnect(saved, sender=self.UserModel)
