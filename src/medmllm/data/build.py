"""`medmllm data build RECIPE.yaml`: raw sources -> stage datasets, resumable, with a report.

Steps, each written to ``OUTPUT/work/`` and skipped on a re-run when its inputs and settings are
unchanged (a content hash in ``OUTPUT/work/manifest.json``)::

    import each source  ->  merge (+ text de-identification)  ->  filters  ->  near / semantic dedup
        ->  multi-round conversations  ->  one JSONL per stage (balanced as the stage says)

Memory: samples stream from step to step; dedup keeps only the compared texts, balancing only
(id, task, categories) per sample, so a million records fit in 24 GiB. Every dropped record is
counted by reason in ``report.json`` / ``report.html`` (with disease distributions before and
after balancing, as P2Med's Fig. 7).

A recipe (paths relative to the recipe file)::

    name: p2med
    output: build/p2med
    seed: 0
    sources:
      - {name: iu-xray, format: r2gen, path: raw/iu_xray/annotation.json, options: {image_root: raw/iu_xray/images}}
      - {name: records, format: medmllm, path: raw/records.jsonl}
    deid: {salt_env: MEDMLLM_DEID_SALT}          # optional: text de-identification
    filters: {names: [missing_output, too_long, few_ngrams], max_tokens: 4000}
    dedup: {near: {threshold: 0.85, ngram: 5, bands: 256, rows: 16, text: output}, semantic: null}
    conversations: {multi_round: true}
    stages:
      - {name: stage1}
      - {name: stage2, balance: {by: task, per_task: 1000}}
      - {name: stage3, balance: {by: disease, min_size: 100, max_size: 2000, cap: 500}}
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medmllm.config_files import describe_validation_error, read_yaml
from medmllm.data.io import read_samples, write_samples
from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Section):
    name: str
    format: str
    path: str
    options: dict[str, Any] = Field(default_factory=dict)


class DeidSpec(_Section):
    salt_env: str = "MEDMLLM_DEID_SALT"  # the salt is read from this environment variable, never from the recipe
    shift_dates: bool = True


class FilterSpec(_Section):
    names: list[str] = Field(default_factory=lambda: ["missing_output", "too_long", "few_ngrams"])
    max_tokens: int = 4000
    min_ngrams: int = 5
    required_sections: list[str] = Field(default_factory=list)
    min_image: tuple[int, int] = (336, 336)


class NearDedupSpec(_Section):
    threshold: float = 0.85
    ngram: int = 5
    bands: int = 256
    rows: int = 16
    text: Literal["output", "conversation"] = "output"


class SemanticDedupSpec(_Section):
    threshold: float = 0.95
    text: Literal["output", "conversation"] = "output"


class DedupSpec(_Section):
    near: NearDedupSpec | None = Field(default_factory=NearDedupSpec)
    semantic: SemanticDedupSpec | None = None


class ConversationSpec(_Section):
    multi_round: bool = True


class BalanceSpec(_Section):
    by: Literal["task", "disease", "normal"]
    per_task: int | dict[str, int | None] | None = None
    min_size: int = 0
    max_size: int | None = None
    cap: int | None = None
    total: int | None = None
    ratio: float = 1.0


class StageSpec(_Section):
    name: str
    tasks: list[str] | None = None  # task prefixes to include (default all)
    splits: list[str] | None = None  # default all
    balance: BalanceSpec | None = None


class BuildRecipe(_Section):
    name: str
    output: str
    seed: int = 0
    sources: list[SourceSpec] = Field(min_length=1)
    deid: DeidSpec | None = None
    filters: FilterSpec | None = Field(default_factory=FilterSpec)
    dedup: DedupSpec | None = Field(default_factory=DedupSpec)
    conversations: ConversationSpec = Field(default_factory=ConversationSpec)
    stages: list[StageSpec] = Field(default_factory=lambda: [StageSpec(name="all")], min_length=1)

    @classmethod
    def load(cls, path: str | Path) -> BuildRecipe:
        data = read_yaml(path)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise MedMLLMError(f"{path}: {describe_validation_error(e, 'recipe')}") from None


# --------------------------------------------------------------------------- steps


class _Builder:
    def __init__(self, recipe: BuildRecipe, base: Path, force: bool, log):
        self.recipe, self.base, self.force, self.log = recipe, base, force, log
        self.out = (base / recipe.output).resolve()
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.work / "manifest.json"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() and not force else {}
        self.report: dict[str, Any] = {"name": recipe.name, "steps": {}, "dropped": Counter(), "stages": {}}

    # A step's key: its settings and the content hashes of its inputs.
    def _cached(self, step: str, key: dict, output: Path) -> bool:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        entry = self.manifest.get(step)
        self._pending = (step, digest)
        if entry and entry["key"] == digest and output.exists() and entry.get("output_sha256") == _file_hash(output):
            self.report["steps"][step] = entry["report"] | {"cached": True}
            self.report["dropped"].update(entry["report"].get("dropped", {}))
            self.log(f"{step}: unchanged, reusing {output.relative_to(self.out)}")
            return True
        return False

    def _done(self, output: Path, step_report: dict) -> None:
        step, digest = self._pending
        self.manifest[step] = {"key": digest, "output_sha256": _file_hash(output), "report": step_report}
        self.manifest_path.write_text(json.dumps(self.manifest, indent=1))
        self.report["steps"][step] = step_report
        self.report["dropped"].update(step_report.get("dropped", {}))

    def run(self) -> dict:
        started = time.perf_counter()
        imported = [self.import_source(spec) for spec in self.recipe.sources]
        current = self.merge(imported)
        if self.recipe.filters:
            current = self.filter(current)
        if self.recipe.dedup and (self.recipe.dedup.near or self.recipe.dedup.semantic):
            current = self.dedup(current)
        if self.recipe.conversations.multi_round:
            current = self.conversations(current)
        for stage in self.recipe.stages:
            self.stage(stage, current)
        self.report["seconds"] = round(time.perf_counter() - started, 1)
        self.report["dropped"] = dict(self.report["dropped"])
        from medmllm.data.report import write_build_report

        write_build_report(self.report, self.out)
        return self.report

    def import_source(self, spec: SourceSpec) -> Path:
        from medmllm.data.formats import import_samples

        src = (self.base / spec.path).resolve()
        out = self.work / f"import-{spec.name}.jsonl"
        options = {k: (str((self.base / v).resolve()) if k.endswith("root") and isinstance(v, str) else v) for k, v in spec.options.items()}
        key = {"spec": spec.model_dump(), "src": _path_hash(src)}
        if not self.force and self._cached(f"import:{spec.name}", key, out):
            return out
        stream = import_samples(spec.format, src, check_images=True, relative_to=self.out, **options)
        n = write_samples(out, (s.model_copy(update={"source": s.source or spec.name}) for s in stream))
        missing = stream.missing
        step = {"samples": n, "missing_images": len(missing.files) if missing else 0}
        if missing and missing.files:
            self.log(f"{spec.name}: {missing.summary()}")
        self._done(out, step)
        self.log(f"import {spec.name} ({spec.format}): {n} samples")
        return out

    def merge(self, inputs: list[Path]) -> Path:
        out = self.work / "merged.jsonl"
        deid = self.recipe.deid
        key = {"inputs": [_file_hash(p) for p in inputs], "deid": deid.model_dump() if deid else None,
               "salt": hashlib.sha256(os.environ.get(deid.salt_env, "").encode()).hexdigest() if deid else None}
        if not self.force and self._cached("merge", key, out):
            return out
        seen: set[str] = set()
        dropped = Counter()
        deidentifier = None
        if deid:
            from medmllm.data.deid_text import TextDeidentifier

            salt = os.environ.get(deid.salt_env)
            if not salt:
                raise MedMLLMError(f"recipe asks for de-identification: set the secret salt in ${deid.salt_env}")
            deidentifier = TextDeidentifier(salt, shift_dates=deid.shift_dates)

        def merged():
            for path in inputs:
                for sample in read_samples(path):
                    if sample.id in seen:
                        dropped["duplicate id"] += 1
                        continue
                    seen.add(sample.id)
                    yield deidentifier.deidentify_sample(sample) if deidentifier else sample

        n = write_samples(out, merged())
        step = {"samples": n, "dropped": dict(dropped)}
        if deidentifier:
            step["deid"] = deidentifier.summary.to_dict()  # counts by category, never values
        self._done(out, step)
        self.log(f"merge: {n} samples" + (f"; text de-identification: {deidentifier.summary}" if deidentifier else ""))
        return out

    def filter(self, src: Path) -> Path:
        from medmllm.data.curate.filters import FilterContext, apply_filters

        spec = self.recipe.filters
        out = self.work / "filtered.jsonl"
        if not self.force and self._cached("filter", {"in": _file_hash(src), "spec": spec.model_dump()}, out):
            return out
        ctx = FilterContext(root=self.out, max_tokens=spec.max_tokens, min_ngrams=spec.min_ngrams,
                            required_sections=tuple(spec.required_sections), min_height=spec.min_image[0], min_width=spec.min_image[1])
        run = apply_filters(read_samples(src), spec.names, ctx)
        n = write_samples(out, run)
        self._done(out, {"samples": n, "dropped": dict(run.dropped)})
        self.log(f"filters: kept {n}, dropped {sum(run.dropped.values())} {dict(run.dropped)}")
        return out

    def dedup(self, src: Path) -> Path:
        from medmllm.data.curate.dedup import conversation_text, near_duplicate_clusters, output_text

        spec = self.recipe.dedup
        out = self.work / "dedup.jsonl"
        if not self.force and self._cached("dedup", {"in": _file_hash(src), "spec": spec.model_dump(), "seed": self.recipe.seed}, out):
            return out
        text_of = {"output": output_text, "conversation": conversation_text}
        keep = None
        dropped = Counter()
        if spec.near:
            texts = [text_of[spec.near.text](s) for s in read_samples(src)]  # texts only, not samples
            clusters = near_duplicate_clusters(texts, ngram=spec.near.ngram, threshold=spec.near.threshold, bands=spec.near.bands,
                                               rows=spec.near.rows, seed=self.recipe.seed)
            keep = [int(c) == i for i, c in enumerate(clusters)]
            dropped["near-duplicate"] = keep.count(False)
            del texts
        if spec.semantic:
            from medmllm.data.curate.semantic import semantic_duplicate_clusters

            texts, kept_index = [], []
            for i, s in enumerate(read_samples(src)):
                if keep is None or keep[i]:
                    texts.append(text_of[spec.semantic.text](s))
                    kept_index.append(i)
            clusters = semantic_duplicate_clusters(texts, threshold=spec.semantic.threshold)
            keep = keep or [True] * len(texts)
            for j, c in enumerate(clusters):
                if int(c) != j:
                    keep[kept_index[j]] = False
                    dropped["semantic-duplicate"] += 1
        n = write_samples(out, (s for i, s in enumerate(read_samples(src)) if keep[i]))
        self._done(out, {"samples": n, "dropped": dict(dropped)})
        self.log(f"dedup: kept {n}, dropped {dict(dropped)}")
        return out

    def conversations(self, src: Path) -> Path:
        from medmllm.data.conversations import multi_round

        out = self.work / "conversations.jsonl"
        if not self.force and self._cached("conversations", {"in": _file_hash(src)}, out):
            return out
        # Reports of one patient, visit and modality are merged; everything else streams through.
        reports, others = [], 0

        def passthrough():
            nonlocal others
            for sample in read_samples(src):
                if sample.task.startswith("p2med/report") and sample.patient_id and sample.visit_id:
                    reports.append(sample)
                else:
                    others += 1
                    yield sample
            yield from multi_round(reports, seed=self.recipe.seed)

        n = write_samples(out, passthrough())
        self._done(out, {"samples": n, "report_samples_in": len(reports), "other_samples": others})
        self.log(f"conversations: {len(reports)} report samples -> {n - others} conversations; {others} other samples")
        return out

    def stage(self, spec: StageSpec, src: Path) -> None:
        out = self.out / f"{spec.name}.jsonl"
        if not self.force and self._cached(f"stage:{spec.name}", {"in": _file_hash(src), "spec": spec.model_dump(), "seed": self.recipe.seed}, out):
            self.report["stages"][spec.name] = self.manifest[f"stage:{spec.name}"]["report"]
            return

        def wanted(s: Sample) -> bool:
            return (spec.tasks is None or any(s.task.startswith(t) for t in spec.tasks)) and (spec.splits is None or s.split in spec.splits)

        keys = [_BalanceKey.of(s) for s in read_samples(src) if wanted(s)]
        before = _distribution(keys)
        chosen, balance_report = _balance(keys, spec.balance, self.recipe.seed)
        selected = {k.id for k in chosen}
        n = write_samples(out, (s for s in read_samples(src) if s.id in selected))
        step = {"samples": n, "candidates": len(keys), "before": before, "after": _distribution(chosen), "balance": balance_report,
                "dropped": {f"not drawn by {spec.balance.by} balancing": len(keys) - n} if spec.balance else {}}
        self._done(out, step)
        self.report["stages"][spec.name] = step
        self.log(f"stage {spec.name}: {n} samples -> {out.relative_to(self.out)}")


class _BalanceKey:
    """What balancing looks at, without the sample's text: id, task, diseases, normal."""

    __slots__ = ("id", "task", "labels", "source")

    def __init__(self, id: str, task: str, labels: dict, source: str | None):
        self.id, self.task, self.labels, self.source = id, task, labels, source

    @classmethod
    def of(cls, sample: Sample) -> _BalanceKey:
        labels = {"diseases": _diseases(sample), "normal": sample.labels.get("normal")}
        return cls(sample.id, sample.task, labels, sample.source)


def _diseases(sample: Sample) -> list[str]:
    """Labelled diseases, else disease categories found in the impression / diagnosis / output text."""
    labelled = sample.labels.get("diseases")
    if labelled:
        return [labelled] if isinstance(labelled, str) else list(labelled)
    text = next((sample.targets[k] for k in ("impression", "diagnosis", "preliminary_diagnosis", "admission_diagnosis", "current_diagnosis") if sample.targets.get(k)), None)
    if text is None:
        text = "\n".join(t.text for t in sample.turns if t.role == "assistant")
    from medmllm.data.vocab import MedicalVocabulary

    return MedicalVocabulary.load().disease_categories(text)


def _balance(keys: list[_BalanceKey], spec: BalanceSpec | None, seed: int):
    if spec is None:
        return keys, None
    from medmllm.data.curate import balance

    if spec.by == "task":
        if spec.per_task is None:
            raise MedMLLMError("balance by task needs per_task (a number, or {task: number})")
        return balance.balance_by_task(keys, spec.per_task, seed)
    if spec.by == "disease":
        return balance.balance_by_category(keys, lambda k: k.labels["diseases"], spec.min_size, spec.max_size, spec.cap, seed, total=spec.total)
    return balance.balance_normal(keys, lambda k: k.labels["normal"], spec.ratio, seed)


def _distribution(keys) -> dict[str, dict[str, int]]:
    tasks, sources, diseases = Counter(), Counter(), Counter()
    for k in keys:
        tasks[k.task] += 1
        sources[k.source or "?"] += 1
        diseases.update(k.labels["diseases"] or ["(none)"])
    return {"task": dict(tasks.most_common()), "source": dict(sources.most_common()), "disease": dict(diseases.most_common())}


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _path_hash(path: Path) -> str:
    """Content hash of a source file, or of a folder's file names, sizes and times (cheap for image trees)."""
    if path.is_file():
        return _file_hash(path)
    if not path.exists():
        raise MedMLLMError(f"{path}: source not found")
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build(recipe_path: str | Path, *, force: bool = False, log=print) -> dict:
    """Run a build recipe; returns the report (also written as report.json / report.html)."""
    recipe_path = Path(recipe_path)
    recipe = BuildRecipe.load(recipe_path)
    return _Builder(recipe, recipe_path.resolve().parent, force, log).run()
