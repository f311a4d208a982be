"""`medmllm data stats`: what a sample file holds, computed in one streaming pass."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from medmllm.data.io import read_samples


def dataset_stats(path: str | Path, *, diseases: bool = True) -> dict:
    tasks, sources, splits, modalities, disease_counts = Counter(), Counter(), Counter(), Counter(), Counter()
    n = images = turns = 0
    words = []
    vocabulary = None
    if diseases:
        from medmllm.data.vocab import MedicalVocabulary

        vocabulary = MedicalVocabulary.load()
    for sample in read_samples(path):
        n += 1
        tasks[sample.task] += 1
        sources[sample.source or "?"] += 1
        splits[sample.split or "?"] += 1
        images += len(sample.images)
        turns += len(sample.turns)
        modalities.update({ref.modality or "?" for ref in sample.images} or {"(text only)"})
        output = "\n".join(t.text for t in sample.turns if t.role == "assistant") or "\n".join(sample.targets.values())
        words.append(len(output.split()))
        if vocabulary is not None:
            labelled = sample.labels.get("diseases")
            found = ([labelled] if isinstance(labelled, str) else list(labelled)) if labelled else vocabulary.disease_categories(sample.targets.get("impression") or output)
            disease_counts.update(found or ["(none)"])
    lengths = np.array(words or [0])
    return {
        "samples": n, "images": images, "turns": turns,
        "task": dict(tasks.most_common()), "source": dict(sources.most_common()), "split": dict(splits.most_common()),
        "modality": dict(modalities.most_common()), "disease": dict(disease_counts.most_common()),
        "output_words": {"p50": int(np.percentile(lengths, 50)), "p90": int(np.percentile(lengths, 90)), "max": int(lengths.max())},
    }
