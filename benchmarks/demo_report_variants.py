"""Experiment: do stage 2-3 variants make the demo model's first-exam reports follow the image?

Run by hand on a finished `medmllm demo --no-report-rounds` folder (it reuses its MiniRad, stage files, vision warm-up
and knowledge stage, and its benchmark files), not by the test suite:

    PYTHONPATH=src python benchmarks/demo_report_variants.py demo-out --variant report-first
    PYTHONPATH=src python benchmarks/demo_report_variants.py demo-out --variant key-weight --weight 5 --from-stage disease-balanced

Variants (docs/demo.md, "Reports from the image"), each trains the recipe's stages from
``--from-stage`` on (stage 2 from the knowledge stage's model, or stage 3 alone from stage 2's):

    committed      the demo's own stage files (the anchor)
    key-weight     the report's first findings sentence and its impression weigh ``--weight`` in the
                   loss (the processor's per-token ``term_weighter`` hook), the rest 1
    report-first   each yes/no training sample opens with a report round about its image
    report-last    each yes/no training sample ends with the report of its image

``--warmup`` changes the vision warm-up under any variant (then the warm-up and knowledge stage are
trained again, once per warm-up, in ``DEMO/variants/WARMUP``, and stage 2 starts from there):

    committed         the demo's own warm-up (default: reused)
    impression-words  ``impression_words: true``: the visual tokens decode to the impression's words
    snap-words        the same, and the visual tokens snapped to those words' embeddings
                      (``snap_to_words: true``): the LLM sees the image as words

With a new warm-up it also prints the label F1 of its visual tokens decoded by the LLM's output
layer: what a model that copied them into its report would score.

Prints one Markdown row: the label F1 of the first-exam reports (5 CheXbert observations, 95% CI),
the shuffled F1 and its p (does the report depend on the image?), the most common openings, and
the diagnosis accuracy (``--diagnosis``). Everything lands under ``DEMO/variants/NAME``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

VARIANTS = ("committed", "key-weight", "report-first", "report-last")
WARMUPS = ("committed", "impression-words", "snap-words")
STAGES = ("task-balanced", "disease-balanced")


class KeyContentWeighter:
    """Loss weight ``weight`` on a report's first findings sentence and its impression (the tokens
    that name what the image shows), 1 elsewhere; answers without those sections weigh 1."""

    other_weight = 1.0

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, text: str) -> list[tuple[int, int, float]]:
        spans = []
        findings = re.search(r"\[Findings\]\s*", text)
        impression = re.search(r"\[Impression\]\s*", text)
        if findings:
            end = text.find(".", findings.end())
            spans.append((findings.end(), end + 1 if end >= 0 else len(text), self.weight))
        if impression and (not spans or impression.end() >= spans[-1][1]):
            spans.append((impression.end(), len(text), self.weight))
        return spans


def with_report_rounds(source: Path, target: Path, reports: dict, first: bool) -> int:
    """``source``'s samples, each yes/no diagnosis sample with its image's report before (``first``:
    `medmllm.demo.with_report_round`, what the demo does) or after its questions, written to
    ``target``; returns how many got one."""
    from medmllm.data.io import read_samples, write_samples
    from medmllm.demo import with_report_round
    from medmllm.demo.benchmark import DIAGNOSIS_TASKS, without_images

    samples, changed = [], 0
    for s in read_samples(source):
        report = reports.get(s.images[0].exam) if s.task in DIAGNOSIS_TASKS and s.images else None
        if report is not None:
            after = [*s.turns, without_images(report.turns[0]), report.turns[1]]
            s, changed = with_report_round(s, reports) if first else s.model_copy(update={"turns": after}), changed + 1
        samples.append(s)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_samples(target, samples)
    return changed


def decoded_visual_tokens(model_dir: Path, bench: Path) -> list[tuple[str, str]]:
    """(the visual tokens of each benchmark sample's image, read by the LLM's output layer (argmax) and
    decoded, the reference report) pairs: what the visual tokens say in words."""
    import torch

    from medmllm.data.io import read_samples
    from medmllm.model.modeling import MedMLLMForCausalLM
    from medmllm.model.processor import MedMLLMProcessor

    model, processor = MedMLLMForCausalLM.from_pretrained(model_dir).eval(), MedMLLMProcessor.from_pretrained(model_dir)
    words = model.config.visual_words
    model.config.visual_words = None  # read the raw tokens: over the snapped words' list when it has one
    words = torch.as_tensor(words) if words else torch.arange(model.get_output_embeddings().weight.shape[0])
    vocabulary = model.get_output_embeddings().weight[words]
    pairs = []
    for sample in read_samples(bench):
        with torch.no_grad():
            visual = model.visual_tokens(processor.image_tensor(str(bench.parent / sample.images[0].path))[None])[0]
        pairs.append((processor.tokenizer.decode(words[(visual @ vocabulary.T).argmax(-1)]), [t.text for t in sample.turns if t.role == "assistant"][-1]))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="a finished `medmllm demo` output folder")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--warmup", choices=WARMUPS, default="committed")
    parser.add_argument("--weight", type=float, default=5.0, help="key-weight: the key content's loss weight")
    parser.add_argument("--from-stage", choices=STAGES, default="task-balanced")
    parser.add_argument("--report-stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="report-first / report-last: the stages whose questions get the report round")
    parser.add_argument("--recipe", type=Path, default=Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml")
    parser.add_argument("--diagnosis", action="store_true", help="also score the yes/no diagnosis questions")
    args = parser.parse_args()

    import medmllm.train.trainer as trainer
    from medmllm.data.io import read_samples
    from medmllm.demo import exam_reports
    from medmllm.demo.benchmark import label_f1, predictions_and_references, shuffled_label_f1
    from medmllm.demo.pipeline import on_datasets
    from medmllm.eval.adapters import build_adapter
    from medmllm.eval.runner import run_eval
    from medmllm.train import load_recipe

    demo, name = args.demo, args.variant + (f"-{args.weight:g}" if args.variant == "key-weight" else "")
    name += "" if set(args.report_stages) == set(STAGES) or not args.variant.startswith("report-") else f"-{'-'.join(args.report_stages)}"
    name += f"+{args.warmup}" if args.warmup != "committed" else ""
    out = demo / "variants" / name
    datasets = {stage: demo / "data" / "seeing" / f"{stage}.jsonl" for stage in STAGES}
    if args.variant.startswith("report-"):
        reports = exam_reports(list(read_samples(demo / "minirad" / "train.jsonl")))
        for stage in args.report_stages:  # beside data/seeing, so that the samples' relative image paths hold
            datasets[stage] = demo / "data" / f"variant-{name}" / f"{stage}.jsonl"
            changed = with_report_rounds(demo / "data" / "seeing" / f"{stage}.jsonl", datasets[stage], reports, args.variant == "report-first")
            print(f"{stage}: {changed} yes/no samples with a report round")
    knowledge = demo / "data" / "seeing" / "knowledge.jsonl"
    recipe = on_datasets(load_recipe(args.recipe), out / "run", {**datasets, "vision-warmup": knowledge, "knowledge": knowledge})
    start = [s.name for s in recipe.stages].index(args.from_stage)
    warmed = demo / "run"
    if args.warmup != "committed":
        start, warmed = 2, demo / "variants" / args.warmup / "run"
        first = on_datasets(recipe.model_copy(update={"stages": recipe.stages[:2]}), warmed, {"vision-warmup": knowledge, "knowledge": knowledge})
        first.stages[0].impression_words, first.stages[0].snap_to_words = True, args.warmup == "snap-words"
        trainer.run_recipe(first, resume=True)
        decoded = decoded_visual_tokens(warmed / "vision-warmup" / "model", demo / "data" / "benchmark" / "reports.jsonl")
        f1, shuffled = label_f1(decoded), shuffled_label_f1(decoded)
        print(f"the warm-up's visual tokens, decoded: label F1 {f1['value']:.3f} {f1['ci95']}, shuffled {shuffled['value']:.3f} (p {shuffled['p']:.2f})")
    recipe.model.init = warmed / recipe.stages[start - 1].name / "model"
    recipe.stages = recipe.stages[start:]
    if args.variant == "key-weight":
        load_start = trainer.load_start

        def weighted_start(recipe, index):
            model, processor = load_start(recipe, index)
            processor.term_weighter = KeyContentWeighter(args.weight)
            return model, processor

        trainer.load_start = weighted_start
    started = time.perf_counter()
    model_dir = trainer.run_recipe(recipe, resume=True)[-1].model_dir
    trained_s = time.perf_counter() - started

    adapter = build_adapter("medmllm", model_dir, batch_size=16)
    bench = demo / "data" / "benchmark" / "reports.jsonl"
    adapter.max_new_tokens = 80
    run_eval(adapter, str(bench), out / "eval" / "reports", resamples=1000)
    pairs = predictions_and_references(out / "eval" / "reports", bench)
    f1, shuffled = label_f1(pairs), shuffled_label_f1(pairs)
    openings = Counter(text.split(".")[0].replace("[Findings]", "").strip() for text, _ in pairs)
    accuracy = ""
    if args.diagnosis:
        adapter.max_new_tokens = 4
        run_eval(adapter, str(demo / "data" / "benchmark" / "diagnosis.jsonl"), out / "eval" / "diagnosis", resamples=1000)
        metrics = json.loads((out / "eval" / "diagnosis" / "metrics.json").read_text())
        accuracy = f"{metrics['tasks']['judgement']['metrics']['accuracy']['value']:.3f}"
    low, high = f1["ci95"]
    common = "; ".join(f'"{text}" {count}' for text, count in openings.most_common(3))
    print("| variant | label F1 [95% CI] | shuffled F1 (p) | openings (distinct; most common) | diagnosis accuracy | training s |")
    print("|---|---:|---:|---|---:|---:|")
    print(f"| {name} from {'knowledge' if args.warmup != 'committed' else args.from_stage} | {f1['value']:.3f} [{low:.3f}, {high:.3f}] | {shuffled['value']:.3f} ({shuffled['p']:.2f}) "
          f"| {len(openings)}; {common} | {accuracy} | {trained_s:.0f} |")


if __name__ == "__main__":
    main()
