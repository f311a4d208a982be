"""Perceiver resampler: any number of visual tokens in, a fixed number of latents out.

As Flamingo / OpenFlamingo and RadFM (eq. 6) build it, and P2Med (eq. 3-4) describes it:
learnable latents are the queries; the flattened visual tokens are the keys and values (with the
latents appended to them when ``attend_latents``, as Flamingo and RadFM do). Each layer is
cross-attention then a feed-forward block, both pre-norm and residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, attend_latents: bool):
        super().__init__()
        self.heads, self.head_dim, self.attend_latents = heads, head_dim, attend_latents
        inner = heads * head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x: (B, T, dim) visual tokens; latents: (B, L, dim) -> (B, L, dim)."""
        x, latents = self.norm_media(x), self.norm_latents(latents)
        kv_input = torch.cat([x, latents], dim=1) if self.attend_latents else x
        b, n_q, n_kv = latents.shape[0], latents.shape[1], kv_input.shape[1]
        q = self.to_q(latents).view(b, n_q, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.to_kv(kv_input).view(b, n_kv, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, head_dim)
        return self.to_out(out.transpose(1, 2).reshape(b, n_q, self.heads * self.head_dim))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False))


class PerceiverResampler(nn.Module):
    """(B, T, dim) -> (B, num_latents, dim), whatever T is (2D image, 3D volume, many slices)."""

    def __init__(self, dim: int, num_latents: int = 32, depth: int = 6, heads: int = 8, head_dim: int = 64, ff_mult: int = 4, attend_latents: bool = True):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, head_dim, attend_latents), FeedForward(dim, ff_mult)]) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        for attn, ff in self.layers:
            if self.gradient_checkpointing and self.training:
                latents = torch.utils.checkpoint.checkpoint(attn, x, latents, use_reentrant=False) + latents
            else:
                latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)
