"""The end-to-end demo (`medmllm demo`, what `make demo` runs): data whose truth is known, in, a
model a clinician can talk to, out.

    1. scans     read the real scans of ../shared/data/scans, previews, the papers' recipes,
                 a DICOM round trip with de-identification (`medmllm.cli.demo.scans_tour`)
    2. LLM       the recipe's LLM (SmolLM2-135M-Instruct for recipes/demo.yaml), fetched once if missing
    3. MiniRad   synthetic chest X-rays and CTs with known findings, reports, questions, records
    4. datasets  P2Med's three stage datasets from MiniRad's train split (`stage_datasets`), and
                 the same text without images for the blind model
    5. train     recipes/demo.yaml: knowledge infusion, task-balanced, disease-balanced
    6. eval      the trained model, the untrained model and the blind model on the held-out
                 MiniRad questions and reports: diagnosis accuracy and CheXpert label F1 with
                 95% CIs (`medmllm.eval`), an HTML report each, and a summary
    7. serve     how to start `medmllm serve` on the result

Everything lands under one folder (``demo-out/`` by default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medmllm.data.schema import ImagePart, Sample

DEMO_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"
# What the held-out benchmark asks, in two parts with their answer lengths (new tokens).
DIAGNOSIS_TASKS = ("radbench/diagnosis-judgement",)
REPORT_TASKS = ("p2med/report-xray", "p2med/report-ct")
PARTS = {"diagnosis": (DIAGNOSIS_TASKS, 4), "reports": (REPORT_TASKS, 80)}
# The headline numbers: diagnosis accuracy from the run's metrics.json (task family "judgement"), and
# CheXpert label F1 (5 observations) of the generated reports against the references (`label_f1`).
ACCURACY, LABEL_F1 = "diagnosis accuracy", "clinical label F1 (micro, 5 observations)"
HEADLINE = (ACCURACY, LABEL_F1)


@dataclass
class DemoConfig:
    out: Path = Path("demo-out")
    n: int = 6000  # MiniRad samples (the train split feeds the stages, val + test the benchmark)
    seed: int = 0
    mrc: bool = True  # multi-round conversations for follow-up exams (P2Med); --no-mrc: one exam per sample
    recipe: Path = DEMO_RECIPE
    # held-out samples per benchmark part and model (None: all): many short diagnosis answers
    # (4 tokens each) for a tight CI, fewer 80-token reports (they take most of the evaluation time)
    eval_limits: dict[str, int | None] = field(default_factory=lambda: {"diagnosis": 400, "reports": 64})
    max_new_tokens: int = 96
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)


def strip_images(sample: Sample) -> Sample:
    """The sample as the blind model sees it: the same turns without their image parts."""
    turns = [turn.model_copy(update={"content": [p for p in turn.content if not isinstance(p, ImagePart)]}) for turn in sample.turns]
    turns = [t for t in turns if t.content]
    return sample.model_copy(update={"turns": turns, "images": []})


def rebase(samples: list[Sample], source: Path, folder: Path) -> list[Sample]:
    """The samples with their image paths (relative to ``source``, MiniRad's folder) made relative to ``folder``."""
    import os

    def moved(ref):
        path = ref.path if os.path.isabs(ref.path) else os.path.relpath(source / ref.path, folder)
        return ref.model_copy(update={"path": path})

    return [s.model_copy(update={"images": [moved(ref) for ref in s.images]}) if s.images else s for s in samples]


def stage_datasets(train: list[Sample], folder: Path, seed: int, *, blind: bool = False, source: Path | None = None) -> dict[str, Path]:
    """P2Med's stage datasets (section V-B) from MiniRad's train samples, as JSONL in ``folder``.

    knowledge         image-report pairs (stage 1: medical knowledge infusion)
    task-balanced     every task family, the same number of samples each (stage 2)
    disease-balanced  samples drawn per disease category, normal studies included (stage 3)

    ``blind``: the same samples with their images removed (the text-only comparison model).
    ``source``: the folder the samples' image paths are relative to (default ``folder``).
    """
    from collections import Counter

    from medmllm.data.curate.balance import balance_by_category, balance_by_task, diseases_of
    from medmllm.data.io import write_samples

    folder.mkdir(parents=True, exist_ok=True)
    knowledge = [s for s in train if s.task in REPORT_TASKS or s.task == "radbench/report"]
    counts = sorted(Counter(s.task for s in train).values())
    per_task = counts[len(counts) // 2]  # the median task size: small tasks keep all theirs
    task_balanced, _ = balance_by_task(train, per_task, seed)
    disease_balanced, _ = balance_by_category(train, lambda s: diseases_of(s) or ["normal"], cap=max(20, len(train) // 12), seed=seed)
    stages = {"knowledge": knowledge, "task-balanced": task_balanced, "disease-balanced": disease_balanced}
    paths = {}
    for name, samples in stages.items():
        samples = [strip_images(s) for s in samples] if blind else rebase(samples, source or folder, folder)
        path = folder / f"{name}.jsonl"
        write_samples(path, samples)
        paths[name] = path
    paths["vision-warmup"] = paths["knowledge"]  # recipes/demo.yaml's first stage reads the reports' labels
    return paths


def benchmark(samples: list[Sample], tasks: tuple[str, ...], path: Path, source: Path, *, blind: bool = False, limit: int | None = None) -> Path:
    """The held-out samples of ``tasks`` as a JSONL benchmark (images stripped for the blind model)."""
    from medmllm.data.io import write_samples

    path.parent.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in samples if s.task in tasks][:limit]
    write_samples(path, [strip_images(s) for s in chosen] if blind else rebase(chosen, source, path.parent))
    return path


def headline(eval_dir: Path, benches: dict[str, Path]) -> dict[str, dict]:
    """{label: {"value", "ci95", "n"}} of the `HEADLINE` numbers of one model's evaluation
    (``eval_dir/diagnosis`` and ``eval_dir/reports``, as `run_demo` writes them)."""
    tasks = json.loads((eval_dir / "diagnosis" / "metrics.json").read_text())["tasks"]
    found = tasks.get("judgement", {}).get("metrics", {}).get("accuracy")
    accuracy = {"value": found["value"], "ci95": found["ci95"], "n": found.get("n")} if found else {"value": None, "ci95": [None, None], "n": 0}
    return {ACCURACY: accuracy, LABEL_F1: label_f1(eval_dir / "reports", benches["reports"])}


def label_f1(eval_dir: Path, bench: Path) -> dict:
    """Micro F1 over CheXbert's 5 observations (atelectasis, cardiomegaly, consolidation, edema,
    pleural effusion) of the generated reports (the last exam's report of each conversation)
    against the references, labelled by `medmllm.eval.labeler`, with a bootstrap 95% CI. Not over
    14: "No Finding" is positive for any text without a finding, so a model writing garbage would
    score well on normal studies."""
    from medmllm.data.io import read_samples
    from medmllm.eval.scoring import score
    from medmllm.jsonl import read_jsonl

    predictions = {row["id"]: row.get("prediction") for _, row in read_jsonl(eval_dir / "predictions.jsonl")}
    pairs = []
    for sample in read_samples(bench):
        answers = [t.text for t in sample.turns if t.role == "assistant"]
        if sample.task in REPORT_TASKS and predictions.get(sample.id) is not None and answers:
            pairs.append((predictions[sample.id], [answers[-1]]))
    if len(pairs) < 2:
        return {"value": None, "ci95": [None, None], "n": len(pairs)}
    result = score([p for p, _ in pairs], [r for _, r in pairs], ["chexpert_f1"])["chexpert_micro_f1_5"]
    return {"value": result["value"], "ci95": result["ci95"], "n": len(pairs)}


def on_datasets(recipe, output_dir: Path, datasets: dict[str, Path], *, lora_only: bool = False):
    """A copy of ``recipe`` writing to ``output_dir``, each stage training on ``datasets[stage name]``
    (no eval file: the demo evaluates afterwards); ``lora_only`` keeps the stages with LoRA."""
    recipe = recipe.model_copy(deep=True)
    recipe.run.output_dir = output_dir
    recipe.stages = [s for s in recipe.stages if s.lora is not None or not lora_only]
    for stage in recipe.stages:
        stage.data.train, stage.data.eval = datasets[stage.name], None
    return recipe


def overlap(a: dict, b: dict) -> bool | None:
    """Whether two 95% intervals overlap (None when either is missing)."""
    (alo, ahi), (blo, bhi) = a["ci95"], b["ci95"]
    if None in (alo, ahi, blo, bhi):
        return None
    return not (ahi < blo or bhi < alo)


def run_demo(config: DemoConfig) -> dict:
    """Steps 2-7 of the module docstring; returns the summary (also written to OUT/summary.json)."""
    from medmllm.data.io import read_samples
    from medmllm.model.hub import resolve_model
    from medmllm.synth.minirad import MiniRadConfig, generate
    from medmllm.train import load_recipe
    from medmllm.train.trainer import load_start, run_recipe

    out, log = config.out, config.log
    out.mkdir(parents=True, exist_ok=True)

    def step(name: str):
        started = time.perf_counter()
        log(f"== {name}")
        return lambda: config.timings.__setitem__(name, round(time.perf_counter() - started, 1))

    done = step("LLM")
    from medmllm.model.factory import get_preset

    recipe = load_recipe(config.recipe)
    needed = recipe.model.llm or get_preset(recipe.model.preset).llm
    if needed is not None:
        try:
            llm = resolve_model(needed)
        except Exception:
            from medmllm.model.hub import fetch

            log(f"fetching {needed} once (medmllm models fetch {needed})")
            llm = fetch(needed)
        log(f"{needed}: {llm}")
    done()

    done = step("MiniRad")
    data = out / "minirad"
    if not (data / "truth.jsonl").exists():
        summary = generate(data, MiniRadConfig(n=config.n, seed=config.seed, mrc=config.mrc, xray_size=(64, 64), ct_shape=(16, 64, 64),
                                               modalities={"X-ray": 0.6, "CT": 0.4}))
        log(f"{summary.samples} samples of {summary.patients} patients ({summary.exams} exams) in {summary.seconds:.1f} s")
    train = list(read_samples(data / "train.jsonl"))
    held_out = list(read_samples(data / "test.jsonl")) + list(read_samples(data / "val.jsonl"))
    done()

    done = step("stage datasets")
    seeing = stage_datasets(train, out / "data" / "seeing", config.seed, source=data)
    blind = stage_datasets(train, out / "data" / "blind", config.seed, blind=True)
    for name, path in seeing.items():
        log(f"{name}: {len(path.read_text().splitlines())} samples -> {path}")
    done()

    # A second `medmllm demo` continues (finished stages are skipped); delete OUT to start over.
    done = step("train (3 stages)")
    trained_dir = run_recipe(on_datasets(recipe, out / "run", seeing), resume=True)[-1].model_dir
    done()

    done = step("train the blind model (text only)")
    blind_recipe = on_datasets(recipe, out / "run-blind", blind, lora_only=True)  # without images only the LLM can learn
    blind_dir = run_recipe(blind_recipe, resume=True)[-1].model_dir
    done()

    done = step("untrained model")
    untrained_dir = out / "untrained-model"
    if not (untrained_dir / "config.json").exists():
        from transformers import set_seed

        set_seed(recipe.run.seed)
        model, processor = load_start(recipe, 0)
        model.save_pretrained(untrained_dir)
        processor.save_pretrained(untrained_dir)
    done()

    done = step("evaluate on the held-out MiniRad patients")
    from medmllm.eval.adapters import build_adapter
    from medmllm.eval.runner import run_eval

    numbers, benches = {}, {}
    for blind_view in (False, True):
        benches[blind_view] = {part: benchmark(held_out, tasks, out / "data" / f"benchmark{'-blind' if blind_view else ''}" / f"{part}.jsonl",
                                               data, blind=blind_view, limit=config.eval_limits.get(part))
                               for part, (tasks, _) in PARTS.items()}
    models = {"trained": trained_dir, "untrained": untrained_dir, "blind": blind_dir}
    for name, model_dir in models.items():
        adapter = build_adapter("medmllm", model_dir, batch_size=16)
        for part, (_, new_tokens) in PARTS.items():
            adapter.max_new_tokens = min(new_tokens, config.max_new_tokens)
            run_eval(adapter, str(benches[name == "blind"][part]), out / "eval" / name / part, resamples=1000)
        numbers[name] = headline(out / "eval" / name, benches[name == "blind"])
        log(f"{name}: " + "; ".join(f"{k} {v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v["value"] is not None else f"{k} n/a"
                                     for k, v in numbers[name].items()))
    done()

    comparison = {label: {"trained_vs_blind_cis_overlap": overlap(numbers["trained"][label], numbers["blind"][label]),
                          "trained_better": (numbers["trained"][label]["value"] or 0) > (numbers["blind"][label]["value"] or 0)}
                  for label in HEADLINE}
    summary = {"config": {"n": config.n, "seed": config.seed, "mrc": config.mrc, "recipe": str(config.recipe)},
               "models": {name: str(path) for name, path in models.items()}, "numbers": numbers, "comparison": comparison,
               "timings_s": config.timings}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary) + "\n")
    return summary


def summary_markdown(summary: dict) -> str:
    lines = ["# medmllm demo: held-out MiniRad patients", "",
             "| model | " + " | ".join(HEADLINE) + " |", "|---|" + "---:|" * len(HEADLINE)]
    for name, numbers in summary["numbers"].items():
        cells = []
        for label in HEADLINE:
            v = numbers[label]
            cells.append(f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] (n={v['n']})" if v["value"] is not None else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for label, c in summary["comparison"].items():
        verdict = "better than the blind model" if c["trained_better"] else "NOT better than the blind model"
        ci = {True: "95% CIs overlap", False: "95% CIs do not overlap", None: "CI missing"}[c["trained_vs_blind_cis_overlap"]]
        lines.append(f"- {label}: trained is {verdict}; {ci}.")
    lines.append("")
    lines.append("Timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))
    return "\n".join(lines)


__all__ = ["DemoConfig", "benchmark", "headline", "on_datasets", "rebase", "run_demo", "stage_datasets", "strip_images", "summary_markdown"]
