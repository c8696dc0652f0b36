"""A streaming response whose synchronous, database-backed chunks stay streamed under ASGI.

Django's ASGI handler consumes a synchronous ``StreamingHttpResponse`` with
``sync_to_async(list)``: the whole body in memory before the first byte is
sent (it warns, then does it). ``SyncStreamingResponse`` hands the chunks
over one at a time instead, each fetched with ``sync_to_async`` in the
request's own thread (thread-sensitive), so the database connection that
started a COPY keeps reading it. Under WSGI (and the test client) it is a
plain synchronous stream.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

_END = object()


class SyncStreamingResponse(StreamingHttpResponse):
    async def __aiter__(self):
        chunks = iter(self.streaming_content)
        fetch = sync_to_async(next, thread_sensitive=True)
        while (chunk := await fetch(chunks, _END)) is not _END:
            yield chunk


def export_response(request_export, chunks) -> SyncStreamingResponse:
    """The download of an export: its content type and an attachment file name."""
    response = SyncStreamingResponse(chunks, content_type=request_export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{request_export.filename}"'
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
