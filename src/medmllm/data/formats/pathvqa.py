"""PathVQA in its Hugging Face layout: parquet files with the images embedded.

Dataset: He, Zhang, Mou, Xing, Xie, "PathVQA: 30000+ Questions for Medical Visual Question
Answering", 2020: 4,998 pathology images, 32,799 question/answer pairs (yes/no and open).
The authors' release stores the data as Python pickles, which can run code when loaded, so it is
not read here. The Hugging Face copy (flaviagiammarino/path-vqa) is::

    data/train-00000-of-00002.parquet       columns: image  struct<bytes: binary, path: string>
    data/validation-00000-of-00001.parquet           question  string
    data/test-00000-of-00001.parquet                 answer    string

``src`` is one parquet file or a folder searched for ``*.parquet`` (the dataset's snapshot
folder). Rows are streamed a batch at a time (needs pyarrow: ``pip install 'medmllm[formats]'``).
The images are written once each, named by content hash, to ``image_dir`` (default
``images/SOURCE`` in ``relative_to``, the output's folder). A row whose ``image`` is a path
instead of bytes is resolved against ``image_root`` (default: the parquet file's folder).
Any table with ``image``/``question``/``answer`` columns reads the same way, e.g. the Hugging
Face VQA-RAD copy with ``source="vqa-rad", modality=None``.

Split from the file name (``validation`` -> ``val``); ``split`` keeps only one.
Sample: ``id`` ``path-vqa/SPLIT-N`` (N counts the split's rows across its shards, in file-name
order), task ``vqa``; ``targets.answer``; ``labels``: ``answer_type`` (yes/no -> ``closed``, else
``open``, as PathVQA defines them), ``modality`` ``pathology`` (on the image refs too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medmllm.data.formats._common import ImagePaths, ImageStore, located, parquet_records, split_from_name, vqa_row_sample
from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError

_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, None: 3}


def import_pathvqa(
    src: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    image_dir: Path | None = None,
    source: str = "path-vqa",
    modality: str | None = "pathology",
    split: str | None = None,
) -> Iterator[Sample]:
    src = Path(src)
    if src.is_dir():
        files = sorted(src.rglob("*.parquet"))
        if not files:
            raise MedMLLMError(f"{src}: no .parquet files in this folder")
    else:
        files = [src]
    files.sort(key=lambda p: (_SPLIT_ORDER[split_from_name(p.name)], str(p)))
    store = ImageStore.for_options(image_dir, relative_to, source, src)
    counters: dict[str | None, int] = {}
    for path in files:
        file_split = split_from_name(path.name)
        if split is not None and file_split != split:
            continue
        images = ImagePaths(image_root if image_root is not None else path.parent, relative_to)
        for where, row in parquet_records(path):
            index = counters.get(file_split, 0)
            counters[file_split] = index + 1
            with located(where):
                sample = vqa_row_sample(row, index=index, split=file_split, source=source, store=store, images=images, modality=modality)
            yield sample
