"""Training data: a Dataset over a Sample JSONL, the collator, and a length-grouped sampler.

`SampleDataset` keeps the byte offset of each line, not parsed objects: memory stays at a few bytes
per sample for any file size, and each worker parses only the lines it is given. Items are
`LocatedSample` (the `Sample` and the folder its image paths are relative to), so train and eval
files in different folders share one collator. `SampleCollator` turns a list of them into one
`MedMLLMProcessor` batch: 2D images, 3D volumes and text-only samples mix freely.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medmllm.data.schema import Sample, parse_sample
from medmllm.errors import MedMLLMError

logger = logging.getLogger(__name__)


class LocatedSample(NamedTuple):
    sample: Sample
    root: Path  # the JSONL file's folder: relative image paths are resolved against it


class SampleDataset(Dataset):
    """Samples of a JSONL file, read by byte offset on demand.

    Args:
        path: the JSONL file (blank lines allowed).
        splits: keep only samples whose ``split`` is one of these (None: all). A sample without a
            split is kept.
    """

    def __init__(self, path: str | Path, splits: Sequence[str] | None = None):
        self.path = Path(path)
        self.root = self.path.parent
        if not self.path.is_file():
            raise MedMLLMError(f"{self.path}: no such data file")
        offsets, numbers = [], []
        with open(self.path, "rb") as f:
            position = 0
            for number, line in enumerate(f, start=1):
                if line.strip() and (splits is None or _split_of(line) in (None, *splits)):
                    offsets.append(position)
                    numbers.append(number)
                position += len(line)
        if not offsets:
            raise MedMLLMError(f"{self.path}: no samples" + (f" in split(s) {', '.join(splits)}" if splits else ""))
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.line_numbers = np.asarray(numbers, dtype=np.int64)
        self.lengths: np.ndarray | None = None  # set by `measure`

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> LocatedSample:
        with open(self.path, "rb") as f:
            f.seek(int(self.offsets[index]))
            line = f.readline()
        return LocatedSample(parse_sample(line, f"{self.path}:{self.line_numbers[index]}"), self.root)

    def measure(self, processor, max_tokens: int | None = None) -> int:
        """Token length of every sample (text + ``num_latents + 2`` per image); drop those above
        ``max_tokens`` (P2Med excluded over-long records rather than cutting them: a cut report
        teaches the model to stop mid-sentence). Returns how many were dropped; sets ``lengths``."""
        lengths = np.asarray([sample_length(processor, self[i].sample, self.root) for i in range(len(self))], dtype=np.int64)
        keep = lengths <= max_tokens if max_tokens is not None else np.ones(len(lengths), dtype=bool)
        dropped = int((~keep).sum())
        if not keep.any():
            raise MedMLLMError(f"{self.path}: every sample is longer than max_tokens={max_tokens} (shortest {lengths.min()} tokens)")
        if dropped:
            logger.warning("%s: dropped %d of %d samples longer than %d tokens", self.path, dropped, len(lengths), max_tokens)
        self.offsets, self.line_numbers, self.lengths = self.offsets[keep], self.line_numbers[keep], lengths[keep]
        return dropped


def _split_of(line: bytes) -> str | None:
    """A line's ``split`` without validating the whole sample (that happens when it is read)."""
    import json

    try:
        return json.loads(line).get("split")
    except (ValueError, AttributeError):
        return None  # reported with file:line when the sample is read


def sample_length(processor, sample: Sample, root: Path | None = None) -> int:
    """Tokens the processor will give ``sample``, counted without reading its images.

    The text is rendered exactly as the processor renders it (chat template or P2Med format),
    where each image is ``<image>`` + ``num_latents`` x ``<image_patch>`` + ``</image>``, so image
    tokens count in the length budget as they will in the batch.
    """
    return processor.count_tokens(sample.to_messages(root))


class SampleCollator:
    """List of `LocatedSample` (or bare `Sample`, resolved against ``root``) -> one processor batch."""

    def __init__(self, processor, root: str | Path | None = None, max_length: int | None = None):
        self.processor = processor
        self.root = Path(root) if root is not None else None
        self.max_length = max_length

    def __call__(self, items: Sequence[LocatedSample | Sample]):
        messages = [item.sample.to_messages(item.root) if isinstance(item, LocatedSample) else item.to_messages(self.root) for item in items]
        return self.processor(messages, max_length=self.max_length)


class LengthGroupedSampler(Sampler[int]):
    """Random order, but each run of ``group_size`` consecutive indices (one optimiser step's worth:
    batch size x accumulation) holds samples of similar length, longest group first.

    Like transformers' sampler, but the lengths include image tokens, each epoch reshuffles
    deterministically from ``seed`` + epoch (the Trainer calls `set_epoch`), and the groups are
    shuffled once cut. Mega-batches of ``mega`` groups are shuffled and sorted by length inside,
    then cut into groups; transformers' sampler yields each mega-batch's groups longest to
    shortest, so a dataset of up to ``mega`` groups trained one epoch (the demo's stages) ran from
    its longest samples to its shortest: the last steps all on the shortest kind of sample (the
    demo's single yes/no questions, whose "no" is asked of normal exams), and the model ended
    answering what those taught (docs/demo.md, "Training order").
    """

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int = 0, mega: int = 50):
        self.lengths = np.asarray(lengths)
        self.group_size = max(1, group_size)
        self.mega = mega
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        if not len(self.lengths):
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        size = self.group_size * self.mega
        # Longest first inside each mega-batch, so that groups hold neighbours in length.
        order = np.concatenate([m[np.argsort(-self.lengths[m], kind="stable")] for m in np.split(order, range(size, len(order), size))])
        groups = np.split(order, range(self.group_size, len(order), self.group_size))
        last = [groups.pop()] if len(groups[-1]) < self.group_size else []  # a short last group stays last
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        if groups:  # the longest full group goes first: an out-of-memory shows at step 1, not hours later
            first = int(np.argmax([self.lengths[g].max() for g in groups]))
            groups[0], groups[first] = groups[first], groups[0]
        for g in groups + last:
            yield from (int(i) for i in g)


def count_image_tokens(n_images: int, num_latents: int) -> int:
    """Tokens of ``n_images`` images in the text: ``<image>`` + ``num_latents`` patches + ``</image>`` each."""
    return n_images * (num_latents + 2)


__all__ = ["LengthGroupedSampler", "LocatedSample", "SampleCollator", "SampleDataset", "count_image_tokens", "sample_length"]
