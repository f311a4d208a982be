"""A real server for the serve tests: the ``tiny`` preset saved to a folder, uvicorn in a thread.

``served`` (session scope) gives ``(base_url, api_key, data_dir)``; the model id is the folder
name, `MODEL_ID`. The limits are small so that 413 is quick to provoke.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import save_tiny_model
from tests.servers import ServerThread

MODEL_ID = "tiny-model"
BODY_LIMIT = 2 * 2**20  # chat requests
UPLOAD_LIMIT = 32 * 2**20


class Served(NamedTuple):
    base_url: str  # e.g. http://127.0.0.1:PORT (the OpenAI client wants base_url + "/v1")
    api_key: str
    data_dir: Path


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    import torch

    from medmllm.serve.app import create_app
    from medmllm.serve.auth import add_key
    from medmllm.serve.engine import EngineConfig
    from medmllm.serve.limits import Limits

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("served")
    model_dir = save_tiny_model(root / MODEL_ID)
    key = add_key(root / "keys.txt", "tests")
    app = create_app(
        model_dir, api_keys=root / "keys.txt", data_dir=root / "data",
        limits=Limits(max_body_bytes=BODY_LIMIT, max_upload_bytes=UPLOAD_LIMIT, max_unzipped_bytes=4 * UPLOAD_LIMIT),
        engine_config=EngineConfig(max_batch_size=8, batch_wait_ms=20, request_timeout_s=120),
    )
    server = ServerThread(app)
    yield Served(server.base_url, key, root / "data")
    server.stop()


@pytest.fixture(scope="session")
def client(served):
    """The real OpenAI client, pointed at the test server."""
    from openai import OpenAI

    return OpenAI(base_url=served.base_url + "/v1", api_key=served.api_key, max_retries=0, timeout=120)


def png_data_uri(seed: int = 0, size: int = 48) -> str:
    """A grey PNG as a data URI."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
