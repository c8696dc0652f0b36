"""Compliance export from the command line: the API's files, written to a file or stdout."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from exchange.audit.exports import FILTERS, FORMATS, TABLES, export_request, export_start
from exchange.audit.services import audit_system
from exchange.core.errors import ApplicationError


class Command(BaseCommand):
    help = ("Export the audit log (or orders, trades, ledger entries) as CSV or JSON Lines, streamed with flat "
            "memory, filtered like GET /api/v1/compliance/<table>. The export is itself audited (EXPORT, actor "
            "'manage.py export_audit_log', with --reason).")

    def add_arguments(self, parser):
        parser.add_argument("--table", choices=list(TABLES), default="audit-logs")
        parser.add_argument("--format", choices=list(FORMATS), default="csv")
        parser.add_argument("--start", help="From (inclusive): 2026-01-01 or 2026-01-01T09:00:00Z.")
        parser.add_argument("--end", help="Until (exclusive).")
        parser.add_argument("--actor", help="A username, or system:<process>.")
        parser.add_argument("--action", help="Action codes (or ledger kinds), comma-separated.")
        parser.add_argument("--market", help="A market symbol.")
        parser.add_argument("--user", help="Whose data: a username.")
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")
        parser.add_argument("--reason", default="", help="Why (the request or case), recorded with the export.")

    def handle(self, *args, **options):
        params = {name: options.get(name) or "" for name in ("format", *FILTERS)}
        try:
            export = export_request(table=options["table"], params=params)
        except ApplicationError as error:
            raise CommandError(f"{error.code}: {error.message}") from None
        chunks = export_start(export, audit=audit_system("manage.py export_audit_log"), reason=options["reason"])
        output = open(options["output"], "wb") if options["output"] else sys.stdout.buffer
        written = 0
        try:
            for chunk in chunks:
                output.write(chunk)
                written += len(chunk)
        finally:
            if options["output"]:
                output.close()
            else:
                output.flush()
        if options["output"]:
            self.stderr.write(f"Wrote {written} bytes to {options['output']}.")
