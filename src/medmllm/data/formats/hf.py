"""VQA datasets from the Hugging Face ``datasets`` cache, offline.

For datasets the user already has: ``src`` is a dataset id (``flaviagiammarino/vqa-rad``,
``flaviagiammarino/path-vqa``, ...) that ``datasets.load_dataset`` finds in its cache, or a
folder written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``. Set
``HF_DATASETS_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) so nothing is fetched: ``datasets`` then
answers from its cache (``HF_DATASETS_CACHE``, or ``cache_dir``). The ``datasets`` package is
optional; without it this format says how to install it.

Layout: the rows need ``image`` (or ``images``, a list), ``question`` and ``answer`` columns,
as the Hugging Face copies of VQA-RAD (Lau et al., Scientific Data 2018), PathVQA (He et al.,
2020) and SLAKE (Liu et al., ISBI 2021) have them; ``id``/``qid`` and ``answer_type`` columns
are used when present, other scalar columns go to ``meta``. Rows are read from the Arrow cache a
batch at a time, without decoding the images; their bytes are written once each (named by
content hash) to ``image_dir`` (default ``images/SOURCE`` in ``relative_to``, the output's folder).

Split: each split of the dataset (``validation`` -> ``val``); ``split`` loads only one.
Sample: ``id`` ``SOURCE/ID`` or ``SOURCE/SPLIT-N``; ``source`` defaults to the dataset's name
(``vqa-rad`` for ``flaviagiammarino/vqa-rad``); task ``vqa``; ``labels.answer_type`` (given, or
yes/no -> ``closed``); ``modality`` (option) on the image refs and labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medmllm.data.formats._common import ImagePaths, ImageStore, located, normalize_split, vqa_row_sample
from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError


def import_hf(
    src: str | Path,
    *,
    split: str | None = None,
    name: str | None = None,
    revision: str | None = None,
    cache_dir: Path | None = None,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    image_dir: Path | None = None,
    source: str | None = None,
    modality: str | None = None,
) -> Iterator[Sample]:
    """``split`` is the dataset's own split name (``train``, ``validation``, ``test``);
    ``name`` is the dataset's configuration, ``revision`` its version."""
    try:
        import datasets
    except ImportError:
        raise MedMLLMError(f"{src}: reading a Hugging Face dataset needs the `datasets` package: pip install datasets") from None
    loaded = _load(datasets, src, split, name, revision, cache_dir)
    parts = {split or "": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
    source = source or str(src).rstrip("/").split("/")[-1]
    store = ImageStore.for_options(image_dir, relative_to, source, src)
    images = ImagePaths(image_root if image_root is not None else Path.cwd(), relative_to)
    for split_name, dataset in parts.items():
        our_split = normalize_split(split_name)
        index = 0
        # Arrow batches: image columns stay {bytes, path} structs instead of decoded PIL images.
        for batch in dataset.with_format("arrow").iter(batch_size=256):
            for row in batch.to_pylist():
                with located(f"{src} [{split_name or 'all'}]: row {index}"):
                    sample = vqa_row_sample(row, index=index, split=our_split, source=source, store=store, images=images, modality=modality)
                index += 1
                yield sample


def _load(datasets, src, split, name, revision, cache_dir):
    local = Path(src)
    try:
        if local.is_dir() and any((local / f).exists() for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(local))
            if split is not None and not isinstance(loaded, datasets.Dataset):
                if split not in loaded:
                    raise MedMLLMError(f"{src}: no split {split!r} (has: {', '.join(loaded)})")
                loaded = loaded[split]
            return loaded
        return datasets.load_dataset(str(src), name, split=split, revision=revision, cache_dir=str(cache_dir) if cache_dir else None)
    except MedMLLMError:
        raise
    except (ConnectionError, FileNotFoundError, ValueError, OSError) as e:
        # DatasetNotFoundError is a FileNotFoundError; "offline and not cached" is a ConnectionError.
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MedMLLMError(
            f"{src}: cannot load this dataset ({reason}); offline it must already be in the datasets cache "
            "(load it once with datasets.load_dataset while online, or pass a save_to_disk folder)"
        ) from None
