"""Request body limits: an ASGI middleware that answers 413 before a large body is read.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted while
it streams and cut off with 413 as soon as it passes the limit. Upload routes get the upload
limit, every other route the (smaller) body limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MiB = 2**20


@dataclass
class Limits:
    """Sizes the server accepts. Every field has a default that works on a workstation."""

    max_upload_bytes: int = 512 * MiB  # one upload request (zip, NIfTI, image)
    max_body_bytes: int = 32 * MiB  # any other request (chat with data-URI images)
    max_unzipped_bytes: int = 2048 * MiB  # all members of an uploaded zip, uncompressed
    max_zip_members: int = 5000  # files in an uploaded zip
    upload_paths: tuple[str, ...] = ("/v1/studies", "/v1/files")  # exact paths that take uploads

    def for_path(self, path: str) -> int:
        return self.max_upload_bytes if path.rstrip("/") in self.upload_paths else self.max_body_bytes


class _TooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Pure ASGI (no buffering): wraps ``receive`` to count body bytes."""

    def __init__(self, app, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.for_path(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_413(send, limit)
        received = 0
        exceeded = False
        replaced = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            # Whatever the app made of the cut-off body (frameworks turn read errors into 400),
            # the client gets 413.
            nonlocal replaced
            if exceeded:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await _send_413(send, limit)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await _send_413(send, limit)


async def _send_413(send, limit: int) -> None:
    body = json.dumps({"error": {"message": f"request body over the limit of {limit} bytes", "type": "invalid_request_error",
                                 "code": "request_too_large"}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
