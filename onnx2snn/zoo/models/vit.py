"""A small Vision Transformer for the 16x16 digits (our own code, after ViT-B's layout).

Patch embedding (a 4x4 conv, stride 4), a class token and learned position embeddings,
pre-LayerNorm blocks of multi-head softmax attention and a GELU MLP, a final LayerNorm
and a linear head on the class token. Attention is written with explicit matmuls and a
softmax, so the ONNX graph has MatMul, Softmax and LayerNormalization nodes (not one
fused attention op).
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError


class SelfAttention(nn.Module):
    """Multi-head self-attention on [B, N, D]: softmax(q k^T / sqrt(d)) v, heads concatenated, projected."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"heads={heads} does not divide dim={dim}: pick a divisor of {dim}", "heads")
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, d = x.shape
        q, k, v = self.qkv(x).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DigitsViT(nn.Module):
    """Patch embedding, class token + position embeddings, ``depth`` blocks, LayerNorm, linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 16, patch: int = 4,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        if input_size % patch:
            raise ConfigError(f"input_size={input_size} is not a multiple of patch={patch}: pick a patch that divides it",
                              "patch")
        tokens = (input_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), 1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
