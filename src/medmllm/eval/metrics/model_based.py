"""Model-based metrics: BERTScore (implemented here), CheXbert F1, RadGraph F1 and GREEN (adapters).

They run only with local weights and never download: a metric that cannot find its package or its
weights raises `MetricUnavailable` with one line saying what to install or fetch. torch and
transformers are imported only when one of these metrics is called.

BERTScore (Zhang et al., 2020; as the ``bert_score`` package with ``idf=False``, no baseline
rescaling): each text is encoded with the special tokens, the hidden states of layer ``layer``
are L2-normalised, and with S the cosine similarities of prediction tokens x reference tokens,

    P = mean over prediction tokens of their max over reference tokens of S
    R = mean over reference tokens of their max over prediction tokens of S
    F = 2 P R / (P + R)

where the means leave out the special tokens ([CLS]/[SEP], <s>/</s>) but the maxima include them
(bert_score gives them idf weight 0 and keeps them in the similarity matrix).
With several references the one of highest F gives P, R and F (bert_score's multi-reference rule).
An empty prediction or reference scores 0. The corpus value is the mean over samples.

Model: the ``model`` option, else ``$MEDMLLM_BERTSCORE_MODEL``, else ``roberta-large`` (bert_score's
English default): a local folder, or a Hub name already in the Hugging Face cache (loaded with
``local_files_only=True``, i.e. HF_HUB_OFFLINE semantics). Layer: the ``layer`` option, else
bert_score's choice for the few models listed in `DEFAULT_LAYERS`, else the last layer. Texts are
truncated to the model's maximum length (510 tokens for BERT-style models).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medmllm.errors import MedMLLMError, first_line
from medmllm.eval.metrics.base import MetricUnavailable, Score, register
from medmllm.eval.metrics.clinical import first_references

BERTSCORE_ENV = "MEDMLLM_BERTSCORE_MODEL"
DEFAULT_BERTSCORE_MODEL = "roberta-large"
# bert_score's model2layers for a few common encoders (hidden_states index; 0 = embeddings).
DEFAULT_LAYERS = {
    "roberta-large": 17,
    "roberta-base": 10,
    "bert-base-uncased": 9,
    "bert-large-uncased": 18,
    "distilbert-base-uncased": 5,
    "microsoft/deberta-xlarge-mnli": 40,
    "emilyalsentzer/Bio_ClinicalBERT": 9,  # a BERT-base: bert_score's BERT-base layer
}


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MetricUnavailable(what)


@contextlib.contextmanager
def _offline():
    """Hugging Face Hub offline mode for the duration (packages that would download read the cache only)."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    if importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub import constants
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant


# ---------------------------------------------------------------------------------- BERTScore


def _load_encoder(model: str | None):
    _require("transformers", "bertscore needs transformers and torch: pip install transformers torch")
    from transformers import AutoModel, AutoTokenizer

    name = model or os.environ.get(BERTSCORE_ENV) or DEFAULT_BERTSCORE_MODEL
    local = Path(name).expanduser()
    source = str(local) if local.is_dir() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        encoder = AutoModel.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        raise MetricUnavailable(
            f"bertscore: no local weights for {name!r} (not a model folder, not in the Hugging Face cache); "
            f"fetch them once (huggingface-cli download {name}) or set {BERTSCORE_ENV} to a model folder"
        ) from None
    return name, tokenizer, encoder.eval()


def _embed(texts: list[str], tokenizer, encoder, layer: int, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each text -> (T, H) L2-normalised hidden states of ``layer`` (special tokens included) and
    the (T,) bool mask of its non-special tokens."""
    import torch

    limit = min(getattr(tokenizer, "model_max_length", 512) or 512, getattr(encoder.config, "max_position_embeddings", 512) or 512, 10_000)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=limit,
                              return_tensors="pt", return_special_tokens_mask=True)
            special = batch.pop("special_tokens_mask").bool()
            hidden = encoder(**batch, output_hidden_states=True).hidden_states[layer]
            hidden = torch.nn.functional.normalize(hidden.float(), dim=-1)
            for row, mask, is_special in zip(hidden, batch["attention_mask"].bool(), special):
                out.append((row[mask].numpy(), (~is_special[mask]).numpy()))
    return out


def greedy_match(candidate: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> tuple[float, float, float]:
    """P, R, F of two texts given as ((T, H) unit-norm token embeddings, (T,) mask of the tokens to average)."""
    (cand, cand_keep), (ref, ref_keep) = candidate, reference
    if not cand_keep.any() or not ref_keep.any():
        return 0.0, 0.0, 0.0
    similarity = cand @ ref.T
    precision = float(similarity.max(axis=1)[cand_keep].mean())
    recall = float(similarity.max(axis=0)[ref_keep].mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f


@register(
    "bertscore",
    outputs=("bertscore_precision", "bertscore_recall", "bertscore_f1"),
    signature="bertscore|idf=off|rescale=off|layer=bert_score default or last|multi-ref=max F|=bert_score's algorithm, our transformers code",
    requires=("transformers", "torch"),
    description="BERTScore P/R/F1 (greedy cosine matching of contextual embeddings; local weights only).",
)
def bertscore(predictions: Sequence[str], references: Sequence[Sequence[str]], model: str | None = None,
              layer: int | None = None, batch_size: int = 32) -> dict[str, Score]:
    """BERTScore precision, recall and F1 (see the module docstring); mean over samples."""
    first_references(predictions, references)  # checks the shapes
    name, tokenizer, encoder = _load_encoder(model)
    if layer is None:
        layer = DEFAULT_LAYERS.get(name, encoder.config.num_hidden_layers)
    if not 0 <= layer <= encoder.config.num_hidden_layers:
        raise MedMLLMError(f"bertscore: layer {layer} is not in 0..{encoder.config.num_hidden_layers} for {name!r}")
    texts = list(dict.fromkeys([*predictions, *(r for refs in references for r in refs)]))
    embedded = dict(zip(texts, _embed(texts, tokenizer, encoder, layer, batch_size)))
    values = np.zeros((len(predictions), 3))
    for i, (prediction, refs) in enumerate(zip(predictions, references)):
        values[i] = max((greedy_match(embedded[prediction], embedded[r]) for r in refs), key=lambda prf: prf[2])
    return {name_: Score(float(values[:, k].mean()) if len(values) else float("nan"), values[:, k])
            for k, name_ in enumerate(("bertscore_precision", "bertscore_recall", "bertscore_f1"))}


# ------------------------------------------------------------------- adapters to other packages
# Thin adapters: they run the package's own scorer, offline. Not exercised by this project's tests
# (the packages and their weights are not installed here); docs/clinical-metrics.md says so.


def _run_offline(metric: str, hint: str, fn):
    try:
        with _offline():
            return fn()
    except (OSError, ValueError, RuntimeError) as e:  # missing weights show up as these in HF-based packages
        raise MetricUnavailable(f"{metric}: {first_line(e, 100)} ({hint})") from None


@register("chexbert_f1", outputs=("chexbert_micro_f1_5", "chexbert_macro_f1_5", "chexbert_micro_f1_14", "chexbert_macro_f1_14"),
          signature="chexbert_f1|=f1chexbert package (CheXbert labeler, Smit et al. 2020), its default conventions",
          requires=("f1chexbert",))
def chexbert_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Score]:
    """CheXbert label F1 with the f1chexbert package (local weights only); corpus values, no per-sample values."""
    hint = "pip install f1chexbert and fetch its CheXbert weights once online; medmllm never downloads them"
    _require("f1chexbert", f"chexbert_f1 needs the f1chexbert package ({hint})")
    refs = first_references(predictions, references)

    def run():
        from f1chexbert import F1CheXbert

        _, _, report_14, report_5 = F1CheXbert(device="cpu")(hyps=list(predictions), refs=refs)
        return report_14, report_5

    report_14, report_5 = _run_offline("chexbert_f1", hint, run)
    nan = np.full(len(predictions), np.nan)  # the package reports corpus values only: no interval
    return {
        f"chexbert_{average}_f1_{subset}": Score(float(report[f"{average} avg"]["f1-score"]), nan, lambda _idx: float("nan"))
        for subset, report in (("5", report_5), ("14", report_14)) for average in ("micro", "macro")
    }


@register("radgraph_f1", signature="radgraph_f1|reward=partial|=radgraph package F1RadGraph (Delbrouck et al. 2022)", requires=("radgraph",))
def radgraph_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Score]:
    """RadGraph F1 (partial reward) with the radgraph package (local weights only)."""
    hint = "pip install radgraph and fetch its model once online; medmllm never downloads it"
    _require("radgraph", f"radgraph_f1 needs the radgraph package ({hint})")
    refs = first_references(predictions, references)

    def run():
        from radgraph import F1RadGraph

        mean, per_sample, _, _ = F1RadGraph(reward_level="partial")(hyps=list(predictions), refs=refs)
        return mean, per_sample

    mean, per_sample = _run_offline("radgraph_f1", hint, run)
    return {"radgraph_f1": Score(float(mean), np.asarray(per_sample, dtype=np.float64))}


@register("green", signature="green|model=$MEDMLLM_GREEN_MODEL or StanfordAIMI/GREEN-radllama2-7b|=green_score package (Ostmeier et al. 2024)",
          requires=("green_score",))
def green(predictions: Sequence[str], references: Sequence[Sequence[str]], model: str | None = None) -> dict[str, Score]:
    """GREEN (LLM-judged clinically significant errors) with the green_score package (local weights only; a GPU in practice)."""
    hint = "pip install green-score and fetch StanfordAIMI/GREEN-radllama2-7b once online, or set MEDMLLM_GREEN_MODEL"
    _require("green_score", f"green needs the green_score package ({hint})")
    refs = first_references(predictions, references)
    name = model or os.environ.get("MEDMLLM_GREEN_MODEL") or "StanfordAIMI/GREEN-radllama2-7b"

    def run():
        import tempfile

        from green_score import GREEN

        with tempfile.TemporaryDirectory() as tmp:
            mean, _, per_sample, _, _ = GREEN(name, output_dir=tmp)(refs, list(predictions))
        return mean, per_sample

    mean, per_sample = _run_offline("green", hint, run)
    return {"green": Score(float(mean), np.asarray(per_sample, dtype=np.float64))}


__all__ = ["BERTSCORE_ENV", "DEFAULT_LAYERS", "bertscore", "chexbert_f1", "green", "greedy_match", "radgraph_f1"]
