"""Benchmarks for ``medmllm eval run --bench``: test splits of the published datasets read from
local copies (with the importers of `medmllm.data.formats`), and our own JSONL.

    --bench path/to/test.jsonl        our JSONL (every sample in it; image paths relative to the file)
    --bench jsonl:PATH                the same, explicitly
    --bench vqa-rad:DIR               VQA-RAD's official test set (phrase_type test_*), 451 pairs
    --bench slake:DIR                 SLAKE test.json (English)
    --bench pathvqa:DIR               PathVQA test parquet (Hugging Face layout)
    --bench pmc-vqa:DIR               PMC-VQA test.csv (multiple choice); a CSV file works too
    --bench iu-xray:DIR               IU X-ray test section of R2Gen's annotation.json
    --bench mimic-cxr:DIR             MIMIC-CXR test section of R2Gen's annotation.json

``DIR`` is the dataset's folder as each importer documents it (or the file itself). Nothing is
downloaded. Adding a benchmark: one `Benchmark` line in `BENCHMARKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError


@dataclass(frozen=True)
class Benchmark:
    """A dataset's test split: the importer format and its options; ``test_file``: the file to
    read inside DIR when DIR holds all splits (the others are then not read at all)."""

    name: str
    fmt: str
    description: str
    options: dict = field(default_factory=dict)
    test_file: str | None = None
    keep: Callable[[Sample], bool] = lambda s: s.split in (None, "test")


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("vqa-rad", "vqa-rad", "VQA-RAD official test set (Lau et al. 2018)", {"split": "test"}),
        Benchmark("slake", "slake", "SLAKE test set, English (Liu et al. 2021)", {"lang": "en"}, test_file="test.json"),
        Benchmark("pathvqa", "pathvqa", "PathVQA test set (He et al. 2020), Hugging Face parquet layout", {"split": "test"}),
        Benchmark("pmc-vqa", "pmc-vqa", "PMC-VQA test set, multiple choice (Zhang et al. 2023)", {"split": "test", "mode": "choice"}, test_file="test.csv"),
        Benchmark("iu-xray", "r2gen", "IU X-ray test section, R2Gen annotation.json", {"split": "test", "source": "iu-xray"}),
        Benchmark("mimic-cxr", "r2gen", "MIMIC-CXR test section, R2Gen annotation.json", {"split": "test", "source": "mimic-cxr"}),
        Benchmark("jsonl", "medmllm", "medmllm JSONL: every sample of the file", keep=lambda s: True),
    )
}
_ALIASES = {"path-vqa": "pathvqa", "vqarad": "vqa-rad", "pmcvqa": "pmc-vqa", "iu_xray": "iu-xray", "mimic": "mimic-cxr", "medmllm": "jsonl"}


def parse_bench(spec: str) -> tuple[Benchmark, Path]:
    """``NAME:PATH`` (or a bare ``.jsonl`` path) -> (benchmark, path); one-line error otherwise."""
    name, sep, path = spec.partition(":")
    bare = _ALIASES.get(spec.lower(), spec.lower())
    if not sep and bare in BENCHMARKS and bare != "jsonl" and not Path(spec).exists():
        raise MedMLLMError(f"benchmark {bare!r} needs its local copy: --bench {bare}:DIR (nothing is downloaded)")
    if not sep or len(name) == 1:  # no "NAME:" (a Windows drive letter is no name): a JSONL path
        name, path = "jsonl", spec
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in BENCHMARKS:
        if sep and Path(spec).exists():
            name, path = "jsonl", spec
        else:
            raise MedMLLMError(f"unknown benchmark {spec!r}; use a JSONL path or NAME:DIR with NAME one of {', '.join(BENCHMARKS)}")
    if not path:
        raise MedMLLMError(f"benchmark {name!r} needs its local copy: --bench {name}:DIR (nothing is downloaded)")
    path = Path(path).expanduser()
    if not path.exists():
        raise MedMLLMError(f"{path}: not found (benchmark {name})")
    return BENCHMARKS[name], path


def load_bench(spec: str, limit: int | None = None) -> tuple[str, list[Sample]]:
    """(benchmark name, its test samples in file order, the first ``limit`` only), image paths absolute."""
    from medmllm.data.formats import import_samples

    bench, path = parse_bench(spec)
    if bench.test_file and path.is_dir() and (path / bench.test_file).exists():
        path = path / bench.test_file
    samples: list[Sample] = []
    for sample in import_samples(bench.fmt, path, **bench.options):
        if bench.keep(sample):
            samples.append(sample)
            if limit is not None and len(samples) >= limit:
                break
    if not samples:
        raise MedMLLMError(f"{path}: no test samples found for benchmark {bench.name}")
    ids = set()
    for s in samples:
        if s.id in ids:
            raise MedMLLMError(f"{path}: sample id {s.id!r} appears twice; ids must be unique to resume a run")
        ids.add(s.id)
    return (bench.name if bench.name != "jsonl" else path.stem), samples


__all__ = ["BENCHMARKS", "Benchmark", "load_bench", "parse_bench"]
