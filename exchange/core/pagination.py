"""The cursor pagination of the API's lists, strict about its query parameters.

DRF's ``CursorPagination`` answers a cursor it cannot decode with 404 and
quietly uses the default page size for a ``limit`` that is not a number; a
client then gets a page it did not ask for. Here both are bad input (400,
``INVALID_CURSOR`` or ``INVALID`` on ``limit``); a limit above the maximum is
capped to it, as documented.
"""

from __future__ import annotations

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from exchange.core.errors import ApplicationError


class StrictCursorPagination(CursorPagination):
    """Newest first, ``?limit=`` (1..max_page_size) and ``?cursor=`` from the previous page."""

    ordering = "-id"
    page_size_query_param = "limit"

    def get_page_size(self, request):
        text = request.query_params.get(self.page_size_query_param)
        if text is None:
            return self.page_size
        if not text.isascii() or not text.isdigit() or int(text) < 1:
            raise ApplicationError("INVALID", f"limit must be a whole number from 1 to {self.max_page_size}.",
                                   field=self.page_size_query_param)
        return min(int(text), self.max_page_size)

    def decode_cursor(self, request):
        if request.query_params.get(self.cursor_query_param) == "":
            raise ApplicationError("INVALID_CURSOR", "The cursor is invalid.", field=self.cursor_query_param)
        try:
            return super().decode_cursor(request)
        except NotFound:  # DRF's answer to a cursor it cannot decode; it is bad input, not a missing page
            raise ApplicationError("INVALID_CURSOR", "The cursor is invalid.", field=self.cursor_query_param) from None

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1)
                parameter["description"] = f"Rows per page, 1 to {self.max_page_size} (larger is capped)."
            if parameter["name"] == self.cursor_query_param:
                parameter["schema"].update(minLength=1)
        return parameters
