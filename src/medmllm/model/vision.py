"""Vision encoders, chosen by name: ``VISION_ENCODERS[config.vision_encoder](config)``.

Every encoder maps pixels ``(B, C, D, H, W)`` to visual tokens ``(B, T, hidden_size)`` and has a
``hidden_size`` attribute. Adding one is one class here and one line in the registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from medmllm.errors import MedMLLMError


class ViT3D(nn.Module):
    """RadFM's 3D ViT: 3D patches, learnable 3D position embeddings, no CLS token.

    Position embeddings are factorised (one table per axis, summed), so any depth up to
    ``max_depth`` and any in-plane size up to ``max_size`` works with the same weights. A volume
    whose depth is not a multiple of the patch depth (a 2D image has D = 1) is brought to the
    next multiple by repeating its last slice, as RadFM replicates 2D images along depth.

    vision_config keys (defaults are RadFM's): ``patch_size`` [4, 32, 32] (depth, height, width),
    ``hidden_size`` 768, ``num_layers`` 12, ``num_heads`` 12, ``mlp_ratio`` 4, ``max_depth`` 64,
    ``max_size`` 512.
    """

    def __init__(self, in_channels: int, patch_size=(4, 32, 32), hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, max_depth: int = 64, max_size: int = 512):
        super().__init__()
        self.patch_size = tuple(int(p) for p in patch_size)
        self.hidden_size = hidden_size
        pd, ph, pw = self.patch_size
        self.patch_embed = nn.Conv3d(in_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size)
        self.pos_d = nn.Parameter(torch.randn(max(1, max_depth // pd), hidden_size) * 0.02)
        self.pos_h = nn.Parameter(torch.randn(max(1, max_size // ph), hidden_size) * 0.02)
        self.pos_w = nn.Parameter(torch.randn(max(1, max_size // pw), hidden_size) * 0.02)
        layer = dict(d_model=hidden_size, nhead=num_heads, dim_feedforward=int(hidden_size * mlp_ratio), dropout=0.0,
                     activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(**layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.gradient_checkpointing = False

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, D, H, W) -> tokens (B, D/pd * H/ph * W/pw, hidden_size)."""
        pd, ph, pw = self.patch_size
        b, _c, d, h, w = pixels.shape
        if h % ph or w % pw:
            raise MedMLLMError(f"image of {h} x {w} pixels is not a multiple of the {ph} x {pw} patch; use a recipe whose size fits")
        if d % pd:  # 2D (D = 1) or an odd depth: repeat the last slice up to the next multiple
            pixels = F.pad(pixels, (0, 0, 0, 0, 0, pd - d % pd), mode="replicate")
        x = self.patch_embed(pixels)  # (B, hidden, gd, gh, gw)
        gd, gh, gw = x.shape[2:]
        if gd > len(self.pos_d) or gh > len(self.pos_h) or gw > len(self.pos_w):
            raise MedMLLMError(f"volume of {gd * pd} x {gh * ph} x {gw * pw} exceeds this encoder's maximum "
                               f"{len(self.pos_d) * pd} x {len(self.pos_h) * ph} x {len(self.pos_w) * pw}")
        pos = self.pos_d[:gd, None, None] + self.pos_h[None, :gh, None] + self.pos_w[None, None, :gw]  # (gd, gh, gw, hidden)
        x = x.permute(0, 2, 3, 4, 1) + pos
        x = x.reshape(b, gd * gh * gw, self.hidden_size)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)


class HFSliceEncoder(nn.Module):
    """P2Med's encoder: a transformers vision model (CLIP, SigLIP, DINOv2 ...) on every slice or view.

    Each of the D slices of a (C, D, H, W) image is encoded on its own; a learnable temporal
    embedding (slice index) and positional embedding (token index within a slice) are added before
    the tokens of all slices are flattened for the perceiver (P2Med section V-B.2).

    vision_config keys: ``hf_config`` (a transformers vision config as a dict, with ``model_type``
    such as ``clip_vision_model``, ``siglip_vision_model``, ``dinov2``), ``max_slices`` 64.
    Pretrained weights are loaded by the factory (`medmllm.model.factory`).
    """

    def __init__(self, in_channels: int, hf_config: dict, max_slices: int = 64):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        settings = dict(hf_config)
        cfg = AutoConfig.for_model(settings.pop("model_type"), **settings)
        self.model = AutoModel.from_config(cfg)
        self.hidden_size = cfg.hidden_size
        self.image_size = int(cfg.image_size) if hasattr(cfg, "image_size") else None
        size = self.image_size or 224
        with torch.no_grad():  # tokens per slice differ by family (CLS, registers): ask the model
            probe = torch.zeros(1, getattr(cfg, "num_channels", 3), size, size)
            tokens = self.model(pixel_values=probe).last_hidden_state.shape[1]
        self.temporal = nn.Parameter(torch.zeros(max_slices, self.hidden_size))
        self.positional = nn.Parameter(torch.zeros(tokens, self.hidden_size))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, D, H, W) -> tokens (B, D * tokens_per_slice, hidden_size)."""
        b, c, d, h, w = pixels.shape
        if d > len(self.temporal):
            raise MedMLLMError(f"{d} slices exceed this encoder's maximum of {len(self.temporal)} (vision_config max_slices)")
        slices = pixels.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        tokens = self.model(pixel_values=slices).last_hidden_state  # (B*D, T, hidden)
        tokens = tokens.view(b, d, -1, self.hidden_size) + self.temporal[:d, None] + self.positional[None, None]
        return tokens.reshape(b, -1, self.hidden_size)


class PixelCentering(nn.Module):
    """Subtract the training images' mean image and divide by their spread, before the encoder.

    Why: MiniRad's radiographs share one phantom anatomy (as a department's chest films share a
    chest), so pixels differ between patients only where the findings are. Through a vision
    encoder trained from random weights, that difference stayed at 1e-5 of the visual tokens'
    energy: a linear probe could still read it (probes are scale-free), the LLM could not, and its
    answers did not depend on the image. Centred inputs are the image-specific part alone (the
    visual tokens' across-image variance rose to 0.26 of their energy; docs/training.md). A
    pretrained tower (``hf2d``) needs none of this.

    Buffers (saved with the model): ``mean_2d`` (C, 1, H, W) and ``mean_3d`` (C, D, H, W) with
    (D, H, W) = ``config.pixel_center_shape``, and ``scale`` (2,) (2D, 3D). An image of another
    size meets its mean resampled (trilinear) to its own size. `fit` sets them; until then (all
    zero, scale 1) the module changes nothing.
    """

    def __init__(self, channels: int, shape):
        super().__init__()
        d, h, w = (int(s) for s in shape)
        self.register_buffer("mean_2d", torch.zeros(channels, 1, h, w))
        self.register_buffer("mean_3d", torch.zeros(channels, d, h, w))
        self.register_buffer("scale", torch.ones(2))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, D, H, W), one size -> centred and scaled, same shape."""
        is_3d = pixels.shape[2] > 1
        mean = self.mean_3d if is_3d else self.mean_2d
        if tuple(mean.shape[1:]) != tuple(pixels.shape[2:]):
            mean = F.interpolate(mean[None].float(), size=tuple(pixels.shape[2:]), mode="trilinear", align_corners=False)[0]
        return (pixels - mean.to(pixels.dtype)) / self.scale[int(is_3d)].to(pixels.dtype)

    @torch.no_grad()
    def fit(self, images: list[torch.Tensor]) -> dict:
        """Set the means and scales from training images, each (C, D, H, W) of any size (D = 1: 2D).
        Returns {"images_2d", "images_3d", "scale_2d", "scale_3d"}."""
        found = {}
        for k, (name, is_3d) in enumerate((("mean_2d", False), ("mean_3d", True))):
            chosen = [x for x in images if (x.shape[1] > 1) == is_3d]
            found[f"images_{'3d' if is_3d else '2d'}"] = len(chosen)
            if not chosen:
                continue
            target = getattr(self, name)
            size = tuple(target.shape[1:])
            resized = torch.stack([F.interpolate(x[None].float(), size=size, mode="trilinear", align_corners=False)[0]
                                   if tuple(x.shape[1:]) != size else x.float() for x in chosen]).to(target.device)
            target.copy_(resized.mean(dim=0))
            self.scale[k] = (resized - target).std().clamp_min(1e-6)
            found[f"scale_{'3d' if is_3d else '2d'}"] = round(float(self.scale[k]), 5)
        return found


def build_vit3d(config) -> ViT3D:
    return ViT3D(config.image_channels, **config.vision_config)


def build_hf2d(config) -> HFSliceEncoder:
    return HFSliceEncoder(config.image_channels, **config.vision_config)


VISION_ENCODERS = {"vit3d": build_vit3d, "hf2d": build_hf2d}


def build_vision_encoder(config) -> nn.Module:
    try:
        builder = VISION_ENCODERS[config.vision_encoder]
    except KeyError:
        raise MedMLLMError(f"unknown vision encoder {config.vision_encoder!r}; known: {', '.join(VISION_ENCODERS)}") from None
    return builder(config)
