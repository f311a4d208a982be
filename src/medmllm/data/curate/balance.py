"""Balanced sampling: by task (P2Med stage 2), by disease category (P2Med stages 2-3), and of normal
versus abnormal cases (RadFM).

Every function returns ``(kept, report)``: the kept samples in input order (upsampled copies next
to their original) and a report dict with the counts before and after per group. Sampling is
without replacement and deterministic: each group draws from its own generator seeded by
``(seed, name of the group)``, so adding or removing one task or category does not change what
is drawn for the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from medmllm.data.schema import Sample

__all__ = ["balance_by_category", "balance_by_task", "balance_normal", "diseases_of", "normal_of"]


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one group: stable across runs, machines and Python's hash seed."""
    digest = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, digest])


def diseases_of(sample: Sample) -> list[str]:
    """The default categories: ``labels["diseases"]`` (a list, or one string)."""
    value = sample.labels.get("diseases") or []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def normal_of(sample: Sample) -> bool | None:
    """The default normality: ``labels["normal"]`` (True, False, or None when unknown)."""
    value = sample.labels.get("normal")
    return None if value is None else bool(value)


# --------------------------------------------------------------------------- tasks


def balance_by_task(
    samples: Sequence[Sample],
    per_task: int | Mapping[str, int | None],
    seed: int = 0,
    *,
    upsample: bool = False,
    task_of: Callable[[Sample], str] | None = None,
) -> tuple[list[Sample], dict[str, Any]]:
    """P2Med stage 2: the same number of samples per task, or a given number for each.

    Args:
        samples: the samples.
        per_task: an int (every task gets that many), or ``{task: count}``; a task that is not in
            the mapping, or maps to None, keeps all its samples.
        seed: the sampling seed.
        upsample: a task with fewer samples than its count keeps them all and, only if this is
            True, is filled up with random repeats (the same `Sample` objects; ids repeat).
        task_of: the group of a sample (default: ``sample.task``).

    Returns:
        ``(kept, report)``; ``report["tasks"][task] = {"before", "target", "after", "upsampled"}``,
        plus ``report["before"]`` and ``report["after"]`` totals.
    """
    task_of = task_of or (lambda s: s.task)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(task_of(s), []).append(i)
    picked: list[int] = []
    tasks: dict[str, dict[str, Any]] = {}
    for task, members in groups.items():
        target = per_task if isinstance(per_task, int) else per_task.get(task)
        if target is not None and target < 0:
            raise ValueError(f"per-task count for {task!r} must be >= 0, got {target}")
        chosen, extra = _draw(members, target, _rng(seed, "task:" + task), upsample)
        picked += chosen + extra
        tasks[task] = {"before": len(members), "target": target, "after": len(chosen) + len(extra), "upsampled": len(extra)}
    kept = [samples[i] for i in sorted(picked)]  # stable: repeats sit next to their original
    return kept, {"before": len(samples), "after": len(kept), "tasks": tasks}


def _draw(members: list[int], target: int | None, rng: np.random.Generator, upsample: bool) -> tuple[list[int], list[int]]:
    if target is None or target == len(members):
        return list(members), []
    if target < len(members):
        return sorted(members[k] for k in rng.choice(len(members), size=target, replace=False)), []
    if not upsample or not members:
        return list(members), []
    return list(members), [members[k] for k in rng.choice(len(members), size=target - len(members), replace=True)]


# --------------------------------------------------------------------------- categories


def balance_by_category(
    samples: Sequence[Sample],
    category_of: Callable[[Sample], Sequence[str]] | None = None,
    min_size: int = 0,
    max_size: int | None = None,
    cap: int | None = None,
    seed: int = 0,
    *,
    total: int | None = None,
    multi_label: Literal["drawn", "all"] = "drawn",
) -> tuple[list[Sample], dict[str, Any]]:
    """P2Med stages 2-3: sample up to ``cap`` per disease category, from categories of a given size.

    P2Med stage 3 took X-ray pairs from categories of 100 to 2,000 samples, at most 500 each
    (``min_size=100, max_size=2000, cap=500``); stage 2 looped over outpatient categories of 325 to
    5,000 samples, at most 500 each, "until the total sample size was balanced" (``total=``).

    Algorithm: a category's size is the number of samples that carry it (a sample with several
    categories counts in each). Categories with ``min_size <= size <= max_size`` are eligible. Each
    eligible category has a queue of its samples in a seeded random order; the categories take
    turns, smallest first (ties by name), each drawing the next sample of its queue that is not
    drawn yet, until every category has ``cap`` draws or an empty queue, or ``total`` samples are
    drawn. Samples with no eligible category are never drawn.

    Args:
        samples: the samples.
        category_of: a sample's categories (default `diseases_of`: ``labels["diseases"]``).
        min_size, max_size: the eligible category sizes, inclusive (None: no upper bound).
        cap: the most draws per category (None: no cap).
        seed: the sampling seed.
        total: stop once this many samples are drawn (None: no limit).
        multi_label: how a drawn sample with several categories counts toward the caps:
            ``"drawn"`` (default) only for the category that drew it, so its other categories may
            end with more than ``cap`` samples (P2Med: "the sampled data included a broader range
            of disease categories"); ``"all"``: for each of its eligible categories, and a category
            only draws samples whose eligible categories are all under their cap, so no eligible
            category ends with more than ``cap``.

    Returns:
        ``(kept, report)``; ``report["categories"][c] = {"before", "eligible", "drawn", "after"}``
        (``after``: kept samples that carry c), plus totals ``before``, ``after`` and
        ``no_eligible_category`` (samples that carry no eligible category).
    """
    if multi_label not in ("drawn", "all"):
        raise ValueError(f"multi_label must be 'drawn' or 'all', got {multi_label!r}")
    category_of = category_of or diseases_of
    cats = [list(dict.fromkeys(category_of(s))) for s in samples]
    carriers: dict[str, list[int]] = {}
    for i, cs in enumerate(cats):
        for c in cs:
            carriers.setdefault(c, []).append(i)
    eligible = {c for c, m in carriers.items() if len(m) >= min_size and (max_size is None or len(m) <= max_size)}
    limit = cap if cap is not None else len(samples)
    order = sorted(eligible, key=lambda c: (len(carriers[c]), c))
    queues = {c: [carriers[c][k] for k in _rng(seed, "category:" + c).permutation(len(carriers[c]))] for c in order}
    position = dict.fromkeys(order, 0)
    count = dict.fromkeys(order, 0)  # draws counted toward each cap
    drawn = dict.fromkeys(order, 0)  # draws made by each category
    taken = np.zeros(len(samples), bool)
    n_taken = 0
    active = [c for c in order if limit > 0]
    while active and (total is None or n_taken < total):
        still = []
        for c in active:
            if total is not None and n_taken >= total:
                break
            if count[c] >= limit:
                continue
            queue, p = queues[c], position[c]
            while p < len(queue) and (taken[queue[p]] or (multi_label == "all" and any(count[d] >= limit for d in cats[queue[p]] if d in eligible))):
                p += 1
            if p == len(queue):
                position[c] = p
                continue
            i = queue[p]
            position[c] = p + 1
            taken[i] = True
            n_taken += 1
            drawn[c] += 1
            for d in cats[i] if multi_label == "all" else (c,):
                if d in eligible:
                    count[d] += 1
            if count[c] < limit and position[c] < len(queue):
                still.append(c)
        active = still
    kept_idx = np.flatnonzero(taken)
    kept = [samples[i] for i in kept_idx]
    after: dict[str, int] = {}
    for i in kept_idx:
        for c in cats[i]:
            after[c] = after.get(c, 0) + 1
    report_cats = {c: {"before": len(m), "eligible": c in eligible, "drawn": drawn.get(c, 0), "after": after.get(c, 0)} for c, m in sorted(carriers.items())}
    no_eligible = sum(1 for cs in cats if not any(c in eligible for c in cs))
    return kept, {"before": len(samples), "after": len(kept), "no_eligible_category": no_eligible, "categories": report_cats}


# --------------------------------------------------------------------------- normal / abnormal


def balance_normal(
    samples: Sequence[Sample],
    is_normal: Callable[[Sample], bool | None] | None = None,
    ratio: float = 1.0,
    seed: int = 0,
    *,
    unknown: Literal["keep", "drop"] = "keep",
) -> tuple[list[Sample], dict[str, Any]]:
    """RadFM: balance normal and abnormal cases to ``normal : abnormal = ratio``.

    The larger group is subsampled (without replacement) so that the kept counts are
    ``abnormal = min(A, floor(N / ratio))`` and ``normal = min(N, round(ratio * abnormal))``,
    the most samples at that ratio. An empty group empties the other one too (report says so).

    Args:
        samples: the samples.
        is_normal: True (normal), False (abnormal) or None (unknown); default `normal_of`.
        ratio: normal samples per abnormal sample (default 1.0), > 0.
        seed: the sampling seed.
        unknown: samples whose normality is unknown are kept untouched (``"keep"``) or dropped.

    Returns:
        ``(kept, report)``: ``report["before"]`` and ``report["after"]`` are
        ``{"normal", "abnormal", "unknown"}`` counts; ``report["ratio"]`` the requested ratio.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    if unknown not in ("keep", "drop"):
        raise ValueError(f"unknown must be 'keep' or 'drop', got {unknown!r}")
    is_normal = is_normal or normal_of
    groups: dict[str, list[int]] = {"normal": [], "abnormal": [], "unknown": []}
    for i, s in enumerate(samples):
        value = is_normal(s)
        groups["unknown" if value is None else "normal" if value else "abnormal"].append(i)
    n_normal, n_abnormal = len(groups["normal"]), len(groups["abnormal"])
    keep_abnormal = min(n_abnormal, int(np.floor(n_normal / ratio + 1e-9)))
    keep_normal = min(n_normal, int(round(ratio * keep_abnormal)))
    picked = _draw(groups["normal"], keep_normal, _rng(seed, "normal"), False)[0]
    picked += _draw(groups["abnormal"], keep_abnormal, _rng(seed, "abnormal"), False)[0]
    if unknown == "keep":
        picked += groups["unknown"]
    kept = [samples[i] for i in sorted(picked)]
    before = {k: len(v) for k, v in groups.items()}
    after = {"normal": keep_normal, "abnormal": keep_abnormal, "unknown": before["unknown"] if unknown == "keep" else 0}
    return kept, {"before": before, "after": after, "ratio": ratio}
