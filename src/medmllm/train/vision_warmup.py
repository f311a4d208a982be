"""A stage with ``objective: report-labels``: teach a vision encoder that starts from random weights
to see, from the reports alone, before the language stages.

P2Med starts from a pretrained CLIP ViT-L and keeps it frozen. A model whose vision encoder is
trained from scratch (the ``demo`` preset, or any vit3d without weights) gets almost nothing from
the language stages in a few hundred steps: the only signal is the language loss sent back through
the whole LLM, and every step pays a forward and backward pass of the LLM. This stage is the cheap
stand-in for a pretrained tower. The vision encoder learns to predict the 14 CheXpert observations
of each image's report, labelled by `medmllm.eval.labeler` (the rule labeller that labelled
CheXpert's radiographs in the same way; "uncertain" counts as positive, the U-Ones convention):

    image (C, D, H, W) -> vision_encoder -> tokens (T, hidden) -> mean over T -> linear head (2D or 3D) -> 14 logits

The head is thrown away at the end. There is one head for 2D images and one for 3D volumes:
their tokens differ so much that one linear read-out mostly learns the modality.

Before phase 1 (``center_pixels``, the default) the model's `PixelCentering` is fitted on the
stage's images: their mean image is subtracted before the encoder from then on. Without it, on
MiniRad (one phantom anatomy, findings the only difference) the visual tokens varied across images
by 1e-5 of their energy, which linear probes read and the LLM did not (docs/training.md).

With ``train.perceiver`` (the default), a second phase then teaches the perceiver and projector
(encoder frozen) to say what the encoder saw in words the LLM already reads: each of the
``num_latents`` visual tokens is regressed (MSE) onto the LLM's input embedding of the matching
token of the report's impression ("Right pleural effusion." -> its first L token embeddings; the
rest masked), while a linear read-out of the 14 labels from their mean (one for 2D, one for 3D,
dropped after) keeps the tokens of different images apart. With the regression alone the loss
fell by learning the average target: on MiniRad, linear probes of the visual tokens scored
held-out AUROC 0.58 / 0.60 / 0.45 (cardiomegaly, pneumothorax, effusion on radiographs) where the
encoder's mean token scored 0.89 / 0.93 / 0.81; trained through a read-out, 0.88 / 0.93 / 0.83.
The LLM stages alone could not teach the perceiver to pass on what the encoder sees in a few dozen
steps. With ``impression_words`` each token is also read by the LLM's output layer, over the words
impressions use, with the cross-entropy of its impression token: the tokens then decode to the
impression ("Left pneumothorax." for a held-out film with a left pneumothorax) instead of to the
same nonsense for every film (docs/training.md). The next stages, as P2Med's, train the perceiver
and LoRA with the LLM's loss.

Measured on MiniRad at 64 x 64 (demo preset, 2 CPU cores, ~6 s per epoch of 1,600 images), with
MiniRad's exact finding labels and lr 1e-3: held-out AUROC after 2 epochs 0.94 cardiomegaly and
0.94 pneumothorax on radiographs, 0.88 cardiomegaly on CT. With the demo's report labels (982
images, 3 epochs, 3e-4) less: 0.87 / 0.91 / 0.78 (cardiomegaly, pneumothorax, effusion) on
radiographs, near chance for the other observations and on CT (docs/training.md).

Which images: every image of a user turn is labelled with the text of the assistant turn that
follows it (a report-generation sample, or each exam of a multi-round conversation). Samples
whose answer mentions no observation are still used (all labels 0). Settings used from the stage:
``train.vision`` (must be on), ``epochs`` / ``max_steps``, ``learning_rate``, ``lr_scheduler``,
``warmup_ratio``, ``weight_decay``, ``batch_size``, ``max_grad_norm``; ``data.eval``, when given,
is scored with held-out AUROC per observation (metrics.json). Every process of a distributed
launch runs it identically (it takes seconds); only the first one writes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmllm.errors import MedMLLMError

logger = logging.getLogger(__name__)


def labelled_images(path: Path) -> list[tuple[object, np.ndarray, str]]:
    """(image as the processor reads it, 14 labels 0/1, the answer's text) for every image of the
    samples in ``path`` that an assistant turn answers."""
    from medmllm.data.io import read_samples
    from medmllm.eval.labeler.chexpert import OBSERVATIONS, label_report

    items = []
    for sample in read_samples(path):
        pending = []
        for message in sample.to_messages(path.parent):
            content = message["content"] if isinstance(message["content"], list) else []
            if message["role"] == "user":
                pending += [part["image"] for part in content if part.get("type") == "image"]
            elif message["role"] == "assistant" and pending:
                text = message["content"] if isinstance(message["content"], str) else " ".join(p.get("text", "") for p in content)
                found = label_report(text)
                labels = np.array([float(found[o] in (1, -1)) for o in OBSERVATIONS], dtype=np.float32)
                items += [(image, labels, text) for image in pending]
                pending = []
    return items


class ReportLabelHeads(nn.Module):
    """Mean visual token -> 14 logits, one linear head for 2D images and one for 3D volumes."""

    def __init__(self, hidden: int, n_labels: int):
        super().__init__()
        self.heads = nn.ModuleDict({"2d": nn.Linear(hidden, n_labels), "3d": nn.Linear(hidden, n_labels)})

    def forward(self, vision_encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, D, H, W), one shape -> logits (B, n_labels)."""
        return self.read(vision_encoder(pixels), pixels.shape[2] == 1)

    def read(self, tokens: torch.Tensor, is_2d: bool) -> torch.Tensor:
        """tokens (B, T, hidden) -> logits (B, n_labels) from their mean."""
        return self.heads["2d" if is_2d else "3d"](tokens.mean(dim=1))


def batches_by_shape(shapes: list[tuple], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices in random batches whose images all have one shape (they are stacked, not padded)."""
    groups: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    out = []
    for members in groups.values():
        rng.shuffle(members)
        out += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    rng.shuffle(out)
    return out


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None without both classes."""
    from scipy.stats import rankdata

    positives = labels.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def run_report_label_stage(model, processor, stage, seed: int, log_path: Path, logging_steps: int) -> dict:
    """Train ``model``'s vision encoder (and, with ``train.perceiver``, then its perceiver and
    projector) in place (see the module docstring); returns the stage's metrics."""
    from medmllm.eval.labeler.chexpert import OBSERVATIONS

    if not stage.train.vision:
        raise MedMLLMError(f"stage {stage.name!r}: objective report-labels trains the vision encoder; set train.vision: true")
    train = labelled_images(stage.data.train)
    if not train:
        raise MedMLLMError(f"{stage.data.train}: no image is answered by an assistant turn; report-labels needs image-report samples")
    pixels = [processor.image_tensor(image, f"{stage.data.train}") for image, _, _ in train]
    centering = {}
    if stage.center_pixels:
        pixels, centering = center_pixels(model, pixels)
        logger.info("stage %s: pixel centering fitted on %s", stage.name, centering)
    labels = torch.from_numpy(np.stack([found for _, found, _ in train]))
    logger.info("stage %s: %d labelled images, positives per observation %s", stage.name, len(train),
                dict(zip(OBSERVATIONS, labels.sum(0).int().tolist())))

    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = next(model.parameters()).device
    encoder = model.vision_encoder
    heads = ReportLabelHeads(encoder.hidden_size, len(OBSERVATIONS)).to(device)
    model.requires_grad_(False)  # each phase switches on what it trains, and off again
    encoder.train()
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        def labels_loss(x, batch):
            return nn.functional.binary_cross_entropy_with_logits(heads(encoder, x), labels[batch].to(device))

        metrics = _fit("labels", labels_loss, [*encoder.parameters(), *heads.parameters()], pixels, stage, rng, log, logging_steps)
        if stage.train.perceiver:
            targets, mask, ids = impression_embeddings(model, processor, [text for _, _, text in train])
            if stage.impression_words:  # scored over the words impressions use (a few hundred): a 100th of the vocabulary's cost
                words = torch.unique(ids[mask > 0])
                vocabulary = model.language_model.get_output_embeddings().weight.detach()[words.to(device)]
                ids = torch.searchsorted(words, ids)

            readout = ReportLabelHeads(model.config.text_config.hidden_size, len(OBSERVATIONS)).to(device)

            def impression_loss(x, batch):
                with torch.no_grad():
                    tokens = encoder(x)
                visual = model.projector(model.perceiver(tokens))  # (B, L, E)
                m = mask[batch].to(device)[..., None]
                mse = ((visual - targets[batch].to(device)) ** 2 * m).sum() / (m.sum() * visual.shape[-1])
                # The labels read from the visual tokens: without this term the regression is met by
                # the average target, and the tokens came out the same for every image.
                bce = nn.functional.binary_cross_entropy_with_logits(readout.read(visual, x.shape[2] == 1), labels[batch].to(device))
                if not stage.impression_words:
                    return mse + bce
                # each token, read by the LLM's own output layer, should say its impression word
                said = m[..., 0] > 0
                ce = nn.functional.cross_entropy((visual[said] @ vocabulary.T).float(), ids[batch].to(device)[said])
                return mse + bce + ce

            encoder.eval()
            model.config.visual_words = None  # a warm-up run again learns from the raw tokens
            params = [*model.perceiver.parameters(), *model.projector.parameters(), *readout.parameters()]
            metrics.update(_fit("impression", impression_loss, params, pixels, stage, rng, log, logging_steps))
            if stage.snap_to_words:
                model.config.visual_words = words.tolist()
                metrics["visual_words"] = len(words)
    model.eval()
    metrics.update({"train_runtime": round(time.perf_counter() - started, 1), "train_images": len(train),
                    **{f"centering_{k}": v for k, v in centering.items()}})
    if stage.data.eval is not None:
        metrics.update(held_out_auroc(encoder, heads, processor, stage.data.eval, stage.batch_size, model.pixel_centering))
    return metrics


def center_pixels(model, pixels: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
    """Fit ``model``'s pixel centering on ``pixels`` (each (C, D, H, W)) and return them centred.
    Its means take the most common volume size (the 2D mean its H x W), else the images' own."""
    from collections import Counter

    sizes = Counter(tuple(x.shape[1:]) for x in pixels)
    volumes = [size for size, _ in sizes.most_common() if size[0] > 1]
    shape = volumes[0] if volumes else sizes.most_common(1)[0][0]
    centering = model.enable_pixel_centering(shape)
    found = centering.fit(pixels)
    device = centering.scale.device
    with torch.no_grad():
        return [centering(x[None].to(device))[0].cpu() for x in pixels], found


def impression_embeddings(model, processor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LLM's input embeddings of the first ``num_latents`` tokens of each report's impression
    (the text after ``[Impression]``, else the whole answer): targets (n, L, E), mask (n, L) and
    the token ids (n, L; 0 where masked)."""
    table = model.language_model.get_input_embeddings().weight.detach()
    length = model.config.num_latents
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    mask = torch.zeros(len(texts), length)
    for i, text in enumerate(texts):
        impression = text.split("[Impression]")[-1].strip()
        found = processor.tokenizer(impression, add_special_tokens=False)["input_ids"][:length]
        ids[i, : len(found)] = torch.tensor(found, dtype=torch.long)
        mask[i, : len(found)] = 1
    targets = table[ids.to(table.device)].cpu() * mask[..., None].to(table.dtype)
    return targets, mask, ids


def _fit(phase: str, loss_of, params: list, pixels: list[torch.Tensor], stage, rng: random.Random, log, logging_steps: int) -> dict:
    """One phase: AdamW + the stage's schedule over shape-grouped batches; returns its metrics."""
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    for p in params:
        p.requires_grad_(True)
    shapes = [tuple(p.shape) for p in pixels]
    per_epoch = len(batches_by_shape(shapes, stage.batch_size, random.Random(0)))
    total = stage.max_steps if stage.max_steps > 0 else math.ceil(stage.epochs * per_epoch)
    optimiser = torch.optim.AdamW(params, lr=stage.learning_rate, weight_decay=stage.weight_decay)
    scheduler = get_scheduler(stage.lr_scheduler, optimiser, num_warmup_steps=int(stage.warmup_ratio * total), num_training_steps=total)
    device = params[0].device
    step, losses = 0, []
    with tqdm(total=total, desc=f"{stage.name} ({phase})") as bar:
        while step < total:
            for batch in batches_by_shape(shapes, stage.batch_size, rng):
                loss = loss_of(torch.stack([pixels[i] for i in batch]).to(device), batch)
                optimiser.zero_grad()
                loss.backward()
                if stage.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
                optimiser.step()
                scheduler.step()
                step += 1
                losses.append(loss.item())
                bar.update(1)
                if step % logging_steps == 0 or step == total:
                    row = {"phase": phase, "step": step, "loss": round(float(np.mean(losses[-logging_steps:])), 4),
                           "learning_rate": scheduler.get_last_lr()[0]}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix(loss=row["loss"])
                if step >= total:
                    break
    for p in params:
        p.requires_grad_(False)
    return {f"{phase}_steps": total, f"{phase}_loss_first": round(losses[0], 4),
            f"{phase}_loss": round(float(np.mean(losses[-max(1, per_epoch):])), 4)}


@torch.no_grad()
def held_out_auroc(encoder, heads, processor, path: Path, batch_size: int, centering=None) -> dict:
    """``eval_auroc/{2d,3d}/OBSERVATION`` on the labelled images of ``path`` (observations with both
    classes), each image centred first by ``centering`` (the model's `PixelCentering`) when given."""
    from medmllm.eval.labeler.chexpert import OBSERVATIONS

    items = labelled_images(path)
    if not items:
        return {}
    pixels = [processor.image_tensor(image, str(path)) for image, _, _ in items]
    targets = np.stack([labels for _, labels, _ in items])
    device = next(encoder.parameters()).device
    scores = np.zeros_like(targets)
    for batch in batches_by_shape([tuple(p.shape) for p in pixels], batch_size, random.Random(0)):
        x = torch.stack([pixels[i] for i in batch]).to(device)
        scores[batch] = torch.sigmoid(heads(encoder, centering(x) if centering is not None else x)).cpu().numpy()
    out = {}
    for kind in ("2d", "3d"):
        rows = [i for i, p in enumerate(pixels) if (p.shape[1] == 1) == (kind == "2d")]
        for k, name in enumerate(OBSERVATIONS):
            value = auroc(targets[rows, k], scores[rows, k]) if rows else None
            if value is not None:
                out[f"eval_auroc/{kind}/{name}"] = round(value, 4)
    return out


__all__ = ["ReportLabelHeads", "auroc", "batches_by_shape", "center_pixels", "held_out_auroc", "impression_embeddings", "labelled_images", "run_report_label_stage"]
