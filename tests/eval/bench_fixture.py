"""A tiny evaluation benchmark for tests: a few samples of every task family, with real scans
(the shared head CT and brain MRI) and PNGs made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmllm.data.io import write_samples
from medmllm.data.schema import ImagePart, ImageRef, Sample, TextPart, Turn, text_turn
from medmllm.data.templates import get_template


def _png(path: Path, seed: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((48, 40)) * 255).astype(np.uint8)).save(path)
    return path.name


def make_bench(folder: Path, head_ct: Path, brain_mri: Path) -> Path:
    """Write ``folder/test.jsonl`` (14 samples, 8 families) and its PNGs; returns the JSONL path."""
    folder.mkdir(parents=True, exist_ok=True)
    xrays = [_png(folder / f"cxr{i}.png", i) for i in range(4)]
    make = lambda name, record, i: get_template(name).make(record, i, paper_prompt=True)  # noqa: E731
    samples = [
        make("radbench/modality-open", {"id": "ct", "images": [{"path": str(head_ct), "modality": "CT"}]}, 0),
        make("radbench/modality-open", {"id": "mr", "images": [{"path": str(brain_mri), "modality": "MR"}]}, 0),
        make("radbench/modality-open", {"id": "xr", "images": [{"path": xrays[0], "modality": "X-ray"}]}, 0),
        make("radbench/diagnosis-judgement", {"id": "d1", "images": [xrays[1]], "diagnoses": ["pneumonia"]}, 1),
        make("radbench/diagnosis-judgement", {"id": "d2", "images": [xrays[2]], "diagnoses": ["edema"]}, 2),
        make("radbench/vqa", {"id": "q1", "images": [xrays[0]], "question": "Is there a pleural effusion?", "answer": "No",
                              "answer_type": "closed", "modality": "X-ray"}, 0),
        make("radbench/vqa", {"id": "q2", "images": [xrays[3]], "question": "Where is the opacity?", "answer": "right lower lobe",
                              "answer_type": "open", "modality": "X-ray"}, 0),
        Sample(id="mc1", task="vqa", images=[ImageRef(path=xrays[1])], turns=[
            Turn(role="user", content=[ImagePart(image=0), TextPart(text="What imaging was used?\nA: MRI\nB: X-ray\nC: PET\nD: CT")]),
            text_turn("assistant", "B: X-ray")], targets={"answer": "X-ray", "choice": "B"}, labels={"answer_type": "choice"}, source="pmc-vqa"),
        make("radbench/report", {"id": "r1", "images": [xrays[2]], "findings": "The lungs are clear. No pleural effusion."}, 0),
        make("radbench/report", {"id": "r2", "images": [{"path": str(head_ct), "modality": "CT"}],
                                 "findings": "No intracranial hemorrhage. Ventricles are normal in size."}, 0),
        make("radbench/rationale", {"id": "ra", "images": [xrays[3]], "rationale": "Patchy consolidation in the right lower lobe",
                                    "diagnoses": ["pneumonia"]}, 0),
        make("p2med/report-xray", {"id": "px", "images": [{"path": xrays[0], "modality": "X-ray", "time": "2022-10-29"}],
                                   "findings": "Both lungs show increased markings.", "impression": "Bronchopneumonia."}, 0),
        make("p2med/outpatient-record", {"id": "op", "chief_complaint": "Cough and fever for 4 days.",
                                         "preliminary_diagnosis": "Bronchopneumonia", "treatment_recommendation": "Nebulisation.",
                                         "treatment_plan": "Review in 3 days."}, 0),
        make("radbench/diagnosis-open", {"id": "do", "images": [xrays[1]], "diagnoses": ["edema", "pneumothorax"]}, 0),
    ]
    path = folder / "test.jsonl"
    write_samples(path, [s.model_copy(update={"source": s.source or "fixture"}) for s in samples])
    return path
