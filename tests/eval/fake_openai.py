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

import socket
import threading
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


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
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))  # port 0: the OS picks a free one, held by this socket (no race)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
