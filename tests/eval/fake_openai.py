"""A fake OpenAI-compatible server for tests: a FastAPI app served by uvicorn in a thread on a free
localhost port, answering ``POST /v1/chat/completions`` with whatever a response function returns.

    with FakeOpenAI(lambda request: '{"reason": "ok", "score": 4}') as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        ...
        server.requests  # the JSON bodies received, in order

``respond(request) -> str`` gets the request body (model, messages, ...) and returns the assistant's
text; raising `HTTPError(status, message)` answers with that HTTP status instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.servers import ServerThread


class HTTPError(Exception):
    def __init__(self, status: int, message: str = "error"):
        super().__init__(message)
        self.status, self.message = status, message


class FakeOpenAI:
    def __init__(self, respond: Callable[[dict], str], model: str = "fake-judge"):
        self.respond, self.model = respond, model
        self.requests: list[dict] = []
        self._lock = threading.Lock()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models():
            return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "test"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with self._lock:
                self.requests.append(body)
            try:
                text = self.respond(body)
            except HTTPError as e:
                return JSONResponse({"error": {"message": e.message, "type": "invalid_request_error"}}, status_code=e.status)
            return {
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", self.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }

        return app

    def __enter__(self) -> FakeOpenAI:
        self._server = ServerThread(self._app())
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    @property
    def base_url(self) -> str:
        return f"{self._server.base_url}/v1"
