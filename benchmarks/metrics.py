"""Benchmark: medmllm's text metrics vs pycocoevalcap (BLEU-1..4, ROUGE-L, CIDEr-D) and rouge-score (ROUGE-L F1).

Run by hand, not by the test suite (pycocoevalcap and rouge-score: the ``evalref`` extra):

    PYTHONPATH=src python benchmarks/metrics.py [--n 10000] [--seed 0] [--repeat 3] [--write benchmarks/RESULTS.md]

Data: ``--n`` report pairs recombined, seeded, from the sentences of tests/eval/data/reports.jsonl
(hand-written chest X-ray / CT reports): a reference is 2-6 reference sentences; its prediction
keeps each of them with probability 0.6, replaces the others by a random prediction sentence with
probability 0.5, adds one with probability 0.3 and is shuffled with probability 0.3.

Everything runs in this one process, one library after another, each timed as the fastest of
``--repeat`` runs. medmllm starts from the raw texts (its tokenizer included, and no cache carried
between runs); pycocoevalcap gets the texts already tokenized by medmllm's tokenizer (the PTB
tokenizer it normally uses is Java and is not timed); rouge-score tokenizes the raw texts itself
(its tokenizer gives the same tokens on this ASCII text). Max |diff| = largest difference of the
per-sample values and of the corpus value.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from results import machine, replace_section  # noqa: E402  (benchmarks/results.py, beside this script)

from medmllm.eval.metrics import get_metric, text  # noqa: E402

FIXTURE = REPO / "tests" / "eval" / "data" / "reports.jsonl"
SECTION = "# Metrics benchmark"


def sentences(text_: str) -> list[str]:
    return [s.strip() + "." for s in text_.replace("\n", " ").split(". ") if s.strip(" .")]


def make_pairs(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """``n`` (prediction, [reference]) pairs recombined from the fixture's sentences."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    ref_pool = sorted({s for r in rows for t in r.get("references", [r.get("reference")]) for s in sentences(t)})
    pred_pool = sorted({s for r in rows for s in sentences(r["prediction"])})
    rng = random.Random(seed)
    predictions, references = [], []
    for _ in range(n):
        ref = rng.sample(ref_pool, rng.randint(2, 6))
        pred = [s if rng.random() < 0.6 else rng.choice(pred_pool) for s in ref if rng.random() < 0.6 or rng.random() < 0.5]
        if rng.random() < 0.3:
            pred.append(rng.choice(pred_pool))
        if rng.random() < 0.3:
            rng.shuffle(pred)
        predictions.append(" ".join(pred))
        references.append([" ".join(ref)])
    return predictions, references


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        text._last = None  # no tokenization carried over between runs
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def run(n: int, seed: int, repeat: int) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from rouge_score import rouge_scorer

    predictions, references = make_pairs(n, seed)
    gts = {i: [text.normalize(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [text.normalize(p)] for i, p in enumerate(predictions)}
    words = np.array([len(r[0].split()) for r in gts.values()] + [len(r[0].split()) for r in res.values()])

    def ours(*names):
        def fn():
            out = {}
            for name in names:
                out.update(get_metric(name).fn(predictions, references))
            return out

        return fn

    def rouge_score_l():
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        per = np.array([scorer.score_multi(refs, p)["rougeL"].fmeasure for p, refs in zip(predictions, references)])
        return per.mean(), per

    rows = []
    for label, our_fn, ref_label, ref_fn, outputs in [
        ("BLEU-1..4", ours("bleu"), "pycocoevalcap Bleu(4)", lambda: Bleu(4).compute_score(gts, res, verbose=0), [f"bleu_{k}" for k in range(1, 5)]),
        ("ROUGE-L (beta 1.2)", ours("rouge_l"), "pycocoevalcap Rouge", lambda: Rouge().compute_score(gts, res), ["rouge_l"]),
        ("ROUGE-L F1", ours("rouge_l_f"), "rouge-score rougeL", rouge_score_l, ["rouge_l_f"]),
        ("CIDEr-D", ours("cider"), "pycocoevalcap Cider", lambda: Cider().compute_score(gts, res), ["cider"]),
    ]:
        t_ours, got = best_of(repeat, our_fn)
        t_ref, want = best_of(repeat, ref_fn)
        corpus, per_sample = want
        if len(outputs) == 1:
            corpus, per_sample = [corpus], [per_sample]
        diff = max(max(abs(got[o].value - corpus[i]), float(np.abs(got[o].per_sample - np.asarray(per_sample[i])).max())) for i, o in enumerate(outputs))
        rows.append(dict(metric=label, reference=ref_label, ours_s=t_ours, ref_s=t_ref, max_diff=diff))
    t_all, _ = best_of(repeat, ours("bleu", "rouge_l", "rouge_l_f", "cider"))
    return dict(n=n, seed=seed, repeat=repeat, rows=rows, all_s=t_all, words=(int(words.min()), float(words.mean()), int(words.max())))


def versions() -> str:
    from importlib.metadata import version

    return (f"Python {platform.python_version()}, numpy {np.__version__}, pycocoevalcap {version('pycocoevalcap')}, "
            f"rouge-score {version('rouge-score')}")


def render(r: dict, started: datetime, load: tuple[float, float]) -> str:
    lo, mean, hi = r["words"]
    lines = [
        SECTION, "",
        f"Generated by `PYTHONPATH=src python benchmarks/metrics.py --n {r['n']} --seed {r['seed']} --repeat {r['repeat']}` (see the script's docstring).", "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (a shared machine: other jobs may have run)",
        f"- Versions: {versions()}",
        f"- Data: {r['n']:,} report pairs recombined (seed {r['seed']}) from the sentences of tests/eval/data/reports.jsonl, one reference each; "
        f"{lo}-{hi} tokens per text (mean {mean:.0f})",
        f"- Time: the fastest of {r['repeat']} runs in one process. medmllm from raw text (tokenizer included); pycocoevalcap on text "
        "pre-tokenized by medmllm's tokenizer (not timed); rouge-score tokenizes itself. Max |diff|: per-sample and corpus values.", "",
        "| metric | medmllm s | reference | reference s | reference / medmllm | max \\|diff\\| |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['metric']} | {row['ours_s']:.3f} | {row['reference']} | {row['ref_s']:.2f} | {row['ref_s'] / row['ours_s']:.1f}x | {row['max_diff']:.1e} |")
    total_ref = sum(row["ref_s"] for row in r["rows"])
    total_ours = sum(row["ours_s"] for row in r["rows"])
    lines += [
        f"| all four, each on its own | {total_ours:.3f} | all four references | {total_ref:.2f} | {total_ref / total_ours:.1f}x | |",
        f"| all four in one call (tokenized once) | {r['all_s']:.3f} | | | {total_ref / r['all_s']:.1f}x | |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", type=Path, default=None, help=f"replace (or append) the `{SECTION}` section of this Markdown file")
    args = ap.parse_args()
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()[0]
    result = run(args.n, args.seed, args.repeat)
    report = render(result, started, (load_start, os.getloadavg()[0]))
    print(report)
    if args.write:
        replace_section(args.write, SECTION, report)
        print(f"wrote the `{SECTION}` section of {args.write}")


if __name__ == "__main__":
    main()
