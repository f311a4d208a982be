"""Helpers of the reformat tests: image-text records on disk and fake model answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# A real-world style figure context (caption + inline mention) with plenty of medical terms.
CONTEXT = ("Axial contrast-enhanced CT of the abdomen shows a hypodense lesion in the right lobe of the liver with peripheral "
           "enhancement, consistent with an abscess; there is a small pleural effusion. Case {i}: the patient presented with fever "
           "and abdominal pain, and the lesion resolved after drainage.")

GOOD_ANSWER = {"Image_description": "Axial CT image of the upper abdomen showing a hypodense hepatic lesion with rim enhancement.",
               "QA-query": "What is seen in the right lobe of the liver?",
               "QA-answer": "A hypodense lesion with peripheral enhancement, in keeping with a liver abscess."}


def make_image(path: Path, seed: int, size: int = 340) -> Path:
    """A CT-like grey image: noise around a bright disc on a dark background (passes the classifier)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 2.5) ** 2
    pixels = np.where(disc, 90 + 60 * rng.random((size, size)), 10 * rng.random((size, size)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def make_records(folder: Path, n: int, *, images_per_record: int = 1, name: str = "in.jsonl") -> Path:
    """``n`` records ``r0``..; images in ``folder/img``; returns the JSONL path."""
    rows = []
    for i in range(n):
        images = [make_image(folder / "img" / f"{i}-{k}.png", 10 * i + k).relative_to(folder).as_posix() for k in range(images_per_record)]
        rows.append({"id": f"r{i}", "images": images, "context": CONTEXT.format(i=i), "source": "pmc"})
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def record_of(request: dict) -> str | None:
    """Which record a chat request is about (its context names the case), or None."""
    _, found, rest = json.dumps(request["messages"]).partition("Case ")
    return "r" + rest.split(":")[0] if found else None
