"""Model adapters for ``medmllm eval run``: one interface, ``adapter.generate(samples) -> texts``.

=========  ==========================================  =============================================
name       what                                        options
=========  ==========================================  =============================================
medmllm    our model folder: `MedMLLMForCausalLM` +    ``--model DIR``; greedy, batched, left-padded;
           `MedMLLMProcessor` (scans as the model      ``--precision`` (auto: bf16 autocast where
           was trained: 2D and 3D)                     the device has it, `medmllm.model.precision`)
hf         any transformers VLM whose processor takes  ``--hf-model DIR``; AutoModelForImageTextToText
           images in chat messages                     + AutoProcessor.apply_chat_template, greedy
openai     any OpenAI-compatible chat endpoint, with   ``--endpoint URL --api-model NAME``; key from
           the real ``openai`` client                  ``OPENAI_API_KEY`` (default "EMPTY"); temperature 0
=========  ==========================================  =============================================

What the model is asked: the sample's turns up to its last assistant turn (earlier assistant
turns are the conversation so far), with its images.

Images for models that take pictures (``hf``, ``openai``; see `scan_image`): a PNG/JPEG file is sent
as it is (as RGB, longest side at most ``image_size``); any other scan is read with
`medmllm.scans.read` and a 2D scan is sent windowed to its 0.5-99.5 percentile range, a 3D volume
as **one mosaic image of 16 evenly spaced axial slices** (4 x 4 tiles, `medmllm.scans.preview.mosaic`).
One image per volume keeps every request within the image limits of common endpoints and gives the
model the whole extent of the scan; the slices' order is row by row, top to bottom (docs/evaluation.md).

Adapters raise on failure; the runner turns a failure into a counted error row for that sample.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError
from medmllm.eval.tasks.base import last_assistant_index

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MOSAIC_TILES = 16
DEFAULT_IMAGE_SIZE = 512


def chat_messages(sample: Sample, image_part) -> list[dict]:
    """The sample's question turns as chat messages with content parts; ``image_part(path)`` makes
    the part of one image (a PIL image for a transformers processor, a data URI for an endpoint)."""
    messages = []
    for message in question_messages(sample):
        content = [image_part(part["image"]) if part["type"] == "image" else {"type": "text", "text": part["text"]} for part in message["content"]]
        messages.append({"role": message["role"], "content": content})
    return messages


def question_messages(sample: Sample, root: str | Path | None = None) -> list[dict]:
    """`Sample.to_messages` of the turns before the last assistant turn (all turns when none)."""
    return sample.to_messages(root, upto=last_assistant_index(sample))


def scan_image(path: str | Path, size: int = DEFAULT_IMAGE_SIZE):
    """A scan as one RGB `PIL.Image` for people and picture-taking models (module docstring):
    photos as they are, 2D scans windowed, 3D volumes as a 4 x 4 mosaic of axial slices."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file():
        with Image.open(path) as img:
            image = img.convert("RGB")
        image.thumbnail((size, size))
        return image
    from medmllm.scans import read
    from medmllm.scans.preview import mosaic

    scan = read(path)
    tiles = MOSAIC_TILES if scan.is_3d else 1
    side = int(round(tiles**0.5))
    return Image.fromarray(mosaic(scan, tiles=tiles, tile_size=max(8, size // side))).convert("RGB")


def image_data_uri(image) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Adapter:
    """``generate(samples) -> one text per sample`` (raises on failure); ``describe()`` -> a JSON
    dict saying what model this is (for metrics.json and resuming)."""

    name = ""
    batch_size = 8

    def generate(self, samples: Sequence[Sample]) -> list[str]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def prompt_length(self, sample: Sample) -> int | None:
        """Tokens of the sample's prompt as the model reads it, or None when unknown (then the runner
        keeps the benchmark's order)."""
        return None


def _torch_device(device: str | None):
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MedMLLMAdapter(Adapter):
    """Our model from a folder (`medmllm train export` or `save_pretrained`), greedy decoding."""

    name = "medmllm"

    def __init__(self, path: str | Path, *, max_new_tokens: int = 256, batch_size: int = 8, device: str | None = None,
                 precision: str = "auto"):
        from medmllm.model.precision import resolve_precision
        from medmllm.train.trainer import load_model

        self.path = Path(path)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.model, self.processor = load_model(self.path)
        self.device = _torch_device(device)
        self.precision = resolve_precision(precision, self.device)  # autocast; the weights stay as saved
        self.model.to(self.device).eval()

    def generate(self, samples: Sequence[Sample]) -> list[str]:
        batch = self.processor([question_messages(s) for s in samples], add_generation_prompt=True)
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items() if k not in ("labels", "loss_weights")}
        tokenizer = self.processor.tokenizer
        from medmllm.model.precision import autocast

        with autocast(self.precision, self.device):
            new = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.processor.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                      **self.cache_options())
        return [text.strip() for text in self.processor.batch_decode(new)]

    def cache_options(self) -> dict[str, Any]:
        """A static KV cache on a CPU, where the LLM has one: written in place instead of grown by a
        concatenation each token, it decoded the demo's follow-up reports ~20% faster with the same
        tokens (tested; docs/evaluation.md). Not compiled (transformers compiles a static cache's
        decoding only on accelerators: there the default dynamic cache is kept)."""
        if self.device.type != "cpu" or not getattr(self.model.language_model, "_can_compile_fullgraph", False):
            return {}
        return {"cache_implementation": "static", "disable_compile": True}

    def prompt_length(self, sample: Sample) -> int:
        return self.processor.count_tokens(question_messages(sample), add_generation_prompt=True)  # no image is read

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.name, "model": str(self.path.resolve()), "max_new_tokens": self.max_new_tokens, "decoding": "greedy",
                "precision": self.precision}


class HFVisionAdapter(Adapter):
    """A transformers image-text-to-text model with its processor's chat template."""

    name = "hf"

    def __init__(self, path: str | Path, *, max_new_tokens: int = 256, batch_size: int = 8, device: str | None = None,
                 image_size: int = DEFAULT_IMAGE_SIZE):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.path = Path(path)
        if not self.path.is_dir():
            raise MedMLLMError(f"{path}: not a model folder (--hf-model takes a local folder)")
        self.max_new_tokens, self.batch_size, self.image_size = max_new_tokens, batch_size, image_size
        try:
            self.processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise MedMLLMError(f"{path}: cannot load as an image-text-to-text model: {str(e).splitlines()[0]}") from None
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        self.device = _torch_device(device)
        self.model.to(self.device).eval()

    def _messages(self, sample: Sample) -> list[dict]:
        return chat_messages(sample, lambda path: {"type": "image", "image": scan_image(path, self.image_size)})

    def generate(self, samples: Sequence[Sample]) -> list[str]:
        import torch

        inputs = self.processor.apply_chat_template([self._messages(s) for s in samples], add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.processor.batch_decode(new, skip_special_tokens=True)]

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.name, "model": str(self.path.resolve()), "class": type(self.model).__name__,
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy", "image_size": self.image_size}


class OpenAIAdapter(Adapter):
    """An OpenAI-compatible chat completions endpoint (vLLM, llama.cpp server, `medmllm serve`, ...).
    Requests of a batch run concurrently (``batch_size`` threads)."""

    name = "openai"

    def __init__(self, endpoint: str, model: str, *, max_new_tokens: int = 256, batch_size: int = 8, image_size: int = DEFAULT_IMAGE_SIZE,
                 timeout: float = 120.0, api_key: str | None = None):
        from openai import OpenAI

        if not model:
            raise MedMLLMError("--endpoint needs --api-model NAME (the model name the endpoint serves)")
        self.endpoint, self.model = endpoint, model
        self.max_new_tokens, self.batch_size, self.image_size = max_new_tokens, batch_size, image_size
        self.client = OpenAI(base_url=endpoint, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY", timeout=timeout, max_retries=2)

    def _messages(self, sample: Sample) -> list[dict]:
        messages = chat_messages(sample, lambda path: {"type": "image_url", "image_url": {"url": image_data_uri(scan_image(path, self.image_size))}})
        for message in messages:
            if message["role"] != "user" and all(p["type"] == "text" for p in message["content"]):
                message["content"] = "".join(p["text"] for p in message["content"])  # system / assistant turns as plain text
        return messages

    def _one(self, sample: Sample) -> str:
        reply = self.client.chat.completions.create(model=self.model, messages=self._messages(sample), max_tokens=self.max_new_tokens, temperature=0)
        return (reply.choices[0].message.content or "").strip()

    def generate(self, samples: Sequence[Sample]) -> list[str]:
        if len(samples) == 1:
            return [self._one(samples[0])]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(samples), self.batch_size)) as pool:
            return list(pool.map(self._one, samples))

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.name, "endpoint": self.endpoint, "model": self.model, "max_new_tokens": self.max_new_tokens,
                "decoding": "temperature 0", "image_size": self.image_size, "volumes": f"one {MOSAIC_TILES}-slice mosaic"}


ADAPTERS: dict[str, type[Adapter]] = {a.name: a for a in (MedMLLMAdapter, HFVisionAdapter, OpenAIAdapter)}


def build_adapter(name: str, *args, **options) -> Adapter:
    """An adapter by name (`ADAPTERS`) with its arguments."""
    try:
        cls = ADAPTERS[name]
    except KeyError:
        raise MedMLLMError(f"unknown model adapter {name!r}; known: {', '.join(ADAPTERS)}") from None
    return cls(*args, **options)


__all__ = ["ADAPTERS", "Adapter", "HFVisionAdapter", "MedMLLMAdapter", "OpenAIAdapter", "build_adapter", "image_data_uri", "question_messages", "scan_image"]
