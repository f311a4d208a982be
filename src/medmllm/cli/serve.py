"""``medmllm serve``: serve a model over an OpenAI-compatible API on this machine, or manage API keys.

    medmllm serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-keys FILE] [--data-dir DIR]
    medmllm serve keys add FILE            (prints a new key once; FILE keeps only its hash)
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from medmllm.cli.groups import DefaultRunGroup
from medmllm.cli.serve_ratings import raters_app, ratings_app
from medmllm.errors import MedMLLMError

app = typer.Typer(
    cls=DefaultRunGroup,
    help="Serve a model (OpenAI-compatible API, study uploads, web pages), or manage API keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="API keys: the server stores only their SHA-256 hashes.", no_args_is_help=True,
                       pretty_exceptions_enable=False, add_completion=False)
app.add_typer(keys_app, name="keys")
app.add_typer(raters_app, name="raters")
app.add_typer(ratings_app, name="ratings")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("run")
def run(
    model: Path = typer.Option(..., "--model", help="A model folder (save_pretrained / `medmllm train export`)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    api_keys: Path = typer.Option(None, "--api-keys", help="Keys file (`medmllm serve keys add FILE`); required unless --no-auth."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (only allowed on a loopback address)."),
    data_dir: Path = typer.Option(Path("medmllm-serve-data"), "--data-dir", help="Where uploaded studies and ratings are kept."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1, help="Requests decoded together in one generate call."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0, help="How long to collect requests for a batch."),
    refill_wait_ms: float = typer.Option(50.0, "--refill-wait-ms", min=0,
                                         help="After a batch of N, how long the next may wait to have N again (0: never)."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Queued requests beyond this get 429."),
    timeout_s: float = typer.Option(300.0, "--timeout", min=1, help="Seconds per request before 504."),
    max_upload_mib: int = typer.Option(512, "--max-upload-mib", min=1, help="Largest upload (413 above)."),
    max_body_mib: int = typer.Option(32, "--max-body-mib", min=1, help="Largest other request body, e.g. a chat with images (413 above)."),
    cors_origin: list[str] = typer.Option(None, "--cors-origin", help="Allow browser calls from this origin (repeatable); none by default."),
) -> None:
    """Serve MODEL at http://HOST:PORT (OpenAI API under /v1, docs at /docs, pages under /ui)."""
    if api_keys is None and not no_auth:
        raise MedMLLMError("pass --api-keys FILE (create one with `medmllm serve keys add FILE`), or --no-auth on a loopback address")
    if no_auth and not _is_loopback(host):
        raise MedMLLMError(f"--no-auth is only allowed on a loopback address, not {host}; use --api-keys")
    if api_keys is not None and no_auth:
        raise MedMLLMError("--api-keys and --no-auth exclude each other")

    import logging

    import uvicorn

    from medmllm.serve.app import create_app
    from medmllm.serve.auth import load_key_hashes
    from medmllm.serve.engine import EngineConfig
    from medmllm.serve.limits import Limits, MiB

    if api_keys is not None:
        load_key_hashes(api_keys)  # a bad keys file is a one-line error before the model loads
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = EngineConfig(max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, refill_wait_ms=refill_wait_ms, max_queue=max_queue, request_timeout_s=timeout_s)
    limits = Limits(max_upload_bytes=max_upload_mib * MiB, max_body_bytes=max_body_mib * MiB)
    server_app = create_app(model, api_keys=api_keys, data_dir=data_dir, limits=limits, engine_config=engine,
                            cors_origins=cors_origin or (), device=device)
    typer.echo(f"serving {model.name} at http://{host}:{port} (API under /v1, OpenAPI at /docs)")
    # uvicorn's access log prints query strings; ours (medmllm.serve) prints ids, sizes and timings only.
    uvicorn.run(server_app, host=host, port=port, access_log=False, log_level="info")


@keys_app.command("add")
def keys_add(
    file: Path = typer.Argument(..., help="The keys file (created with mode 0600 when missing)."),
    label: str = typer.Option("", "--label", help="A note kept beside the hash, e.g. who holds the key."),
) -> None:
    """Create a key, append its hash to FILE and print the key (shown only this once)."""
    from medmllm.serve.auth import add_key

    typer.echo(add_key(file, label))
