"""Building blocks shared by every TESSERA model family, written once.

Attribute names are part of the checkpoint format: they must produce the reference's state-dict
keys (reference-spec sections 3.1, 4.1, 4.2 and 5.1), e.g. ``embedding.0.weight``,
``transformer_encoder.layers.3.linear1.weight``, ``attn_pool.temporal_context.weight_ih_l0`` or
``attn_pool.temporal_context.gru_cell.W_hz.weight``. Dropout is left out of inference modules:
it has no parameters and the reference only ever runs these modules in ``eval()`` mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionPool",
    "CellGRU",
    "CellGruAttentionPool",
    "GruAttentionPool",
    "PixelEncoder",
    "QKNormEncoderLayer",
    "TwoStreamModel",
    "doy_encoding",
    "embedding_mlp",
    "mlp_reducer",
    "standard_encoder",
]


def embedding_mlp(band_num: int, d_model: int) -> nn.Sequential:
    """``Linear(band_num, d_model) -> ReLU -> Linear(d_model, d_model)`` (keys ``0.*`` and ``2.*``)."""
    return nn.Sequential(nn.Linear(band_num, d_model), nn.ReLU(), nn.Linear(d_model, d_model))


def doy_encoding(doy: torch.Tensor, d_model: int) -> torch.Tensor:
    """Sinusoidal encoding of the raw day of year, base 10000, computed in float32.

    Args:
        doy: ``(B, T)`` raw DOY values (any numeric dtype).
        d_model: Encoding width (even).

    Returns:
        ``(B, T, d_model)`` float32, ``sin`` in the even channels and ``cos`` in the odd ones.
    """
    position = doy.unsqueeze(-1).float()
    freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=doy.device) * -(math.log(10000.0) / d_model)
    )
    angle = position * freq
    return torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1).flatten(-2)


def standard_encoder(d_model: int, nhead: int, num_layers: int, dim_feedforward: int) -> nn.TransformerEncoder:
    """PyTorch post-LN encoder stack (ReLU, batch_first, eps 1e-5, no final norm): keys ``layers.{i}.*``."""
    layer = nn.TransformerEncoderLayer(
        d_model=d_model,
        nhead=nhead,
        dim_feedforward=dim_feedforward,
        dropout=0.0,
        activation="relu",
        batch_first=True,
    )
    # nested tensors only matter with padding masks, which TESSERA never uses
    return nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)


class QKNormEncoderLayer(nn.Module):
    """Post-LN encoder layer with per-head RMSNorm on queries and keys (v2 ``enable_qk_norm``).

    Equal to ``nn.TransformerEncoderLayer`` apart from separate q/k/v projections and the
    ``q_norm``/``k_norm`` RMSNorm over each head's channels before scaled dot-product attention.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.nhead = nhead
        self.head_dim = d_model // nhead
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        heads = (batch, steps, self.nhead, self.head_dim)
        q = self.q_norm(self.q_proj(x).view(heads)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(heads)).transpose(1, 2)
        v = self.v_proj(x).view(heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, steps, width))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``."""
        x = self.norm1(x + self._attention(x))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))  # type: ignore[no-any-return]


class AttentionPool(nn.Module):
    """Softmax attention over time from ``query`` = Linear(D, 1) (v2 students)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, 1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The sequence the attention scores are computed from (here the input itself)."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, D)``; T == 0 gives zeros and T == 1 the single step, as the reference."""
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], x.shape[2])
        if x.shape[1] == 1:
            return x[:, 0]
        weights = torch.softmax(self.query(self.context(x)), dim=1)
        return (weights * x).sum(dim=1)


class GruAttentionPool(AttentionPool):
    """v1.0 pooling: scores from an ``nn.GRU`` context (h0 = 0), weights applied to the input."""

    def __init__(self, d_model: int) -> None:
        super().__init__(d_model)
        self.temporal_context = nn.GRU(d_model, d_model, batch_first=True)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """GRU outputs at every step."""
        out, _ = self.temporal_context(x)
        return out  # type: ignore[no-any-return]


class _GateCell(nn.Module):
    """Parameters of the hand-written GRU cell: bias-free gate Linears plus separate biases."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.W_ir = nn.Linear(input_size, hidden_size, bias=False)
        self.W_iz = nn.Linear(input_size, hidden_size, bias=False)
        self.W_ih = nn.Linear(input_size, hidden_size, bias=False)
        self.W_hr = nn.Linear(hidden_size, hidden_size, bias=False)
        self.W_hz = nn.Linear(hidden_size, hidden_size, bias=False)
        self.W_hh = nn.Linear(hidden_size, hidden_size, bias=False)
        self.b_r = nn.Parameter(torch.zeros(hidden_size))
        self.b_z = nn.Parameter(torch.zeros(hidden_size))
        self.b_h = nn.Parameter(torch.zeros(hidden_size))


class CellGRU(nn.Module):
    """The v1.0-QAT / v1.1 GRU (reference ``CustomGRU``), whose equations differ from ``nn.GRU``.

    ``r = σ(W_ir x + W_hr h + b_r)``, ``z = σ(W_iz x + W_hz h + b_z)``,
    ``h~ = tanh(W_ih x + W_hh (r ⊙ h) + b_h)``, ``h' = (1 - z) ⊙ h + z ⊙ h~``, h0 = 0.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gru_cell = _GateCell(input_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D_in) -> (B, T, D_h)``: the hidden state after every step."""
        cell = self.gru_cell
        # the input projections do not depend on h, so all steps are done in one matmul each
        xr, xz, xh = cell.W_ir(x), cell.W_iz(x), cell.W_ih(x)
        h = x.new_zeros(x.shape[0], self.hidden_size)
        outputs = []
        for t in range(x.shape[1]):
            r = torch.sigmoid(xr[:, t] + cell.W_hr(h) + cell.b_r)
            z = torch.sigmoid(xz[:, t] + cell.W_hz(h) + cell.b_z)
            candidate = torch.tanh(xh[:, t] + cell.W_hh(r * h) + cell.b_h)
            h = (1 - z) * h + z * candidate
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class CellGruAttentionPool(AttentionPool):
    """v1.0-QAT / v1.1 pooling: scores from ``LayerNorm(CellGRU(x))``, weights applied to the input."""

    def __init__(self, d_model: int) -> None:
        super().__init__(d_model)
        self.temporal_context = CellGRU(d_model, d_model)
        self.layer_norm = nn.LayerNorm(d_model)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """Layer-normalised GRU outputs."""
        return self.layer_norm(self.temporal_context(x))  # type: ignore[no-any-return]


class PixelEncoder(nn.Module):
    """One modality's backbone: band MLP + DOY encoding -> transformer -> temporal pooling.

    Args:
        band_num: Number of standardised bands (10 for S2, 2 for S1).
        d_model: Width (4 x the reference's ``latent_dim``).
        nhead: Attention heads.
        num_layers: Encoder layers.
        dim_feedforward: Feed-forward width.
        pool: Pooling module mapping ``(B, T, d_model)`` to ``(B, d_model)``.
        qk_norm: Use `QKNormEncoderLayer` (keys ``transformer_encoder.{i}.*``) instead of the
            PyTorch layer (keys ``transformer_encoder.layers.{i}.*``).
    """

    def __init__(
        self,
        band_num: int,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        pool: nn.Module,
        *,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = embedding_mlp(band_num, d_model)
        self.transformer_encoder: nn.Module
        if qk_norm:
            self.transformer_encoder = nn.Sequential(
                *(QKNormEncoderLayer(d_model, nhead, dim_feedforward) for _ in range(num_layers))
            )
        else:
            self.transformer_encoder = standard_encoder(d_model, nhead, num_layers, dim_feedforward)
        self.attn_pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, band_num + 1)`` with the raw DOY last -> ``(B, d_model)``."""
        embedded = self.embedding(x[..., :-1])
        encoded = embedded + doy_encoding(x[..., -1], self.d_model)
        if not torch.is_autocast_enabled(x.device.type):
            # a model cast to bf16/fp16 without autocast needs its own dtype back (the float32
            # encoding promotes the sum); under autocast the float32 sum is what the reference feeds on
            encoded = encoded.to(embedded.dtype)
        return self.attn_pool(self.transformer_encoder(encoded))  # type: ignore[no-any-return]


def mlp_reducer(in_dim: int, out_dim: int, *, final_norm: bool) -> nn.Sequential:
    """``Linear(in, 2in) -> LayerNorm -> ReLU -> Dropout -> Linear(2in, out)`` [-> non-affine LayerNorm].

    The Dropout slot (identity at inference) keeps the reference's key index ``4`` for the last Linear.
    """
    layers: list[nn.Module] = [
        nn.Linear(in_dim, 2 * in_dim),
        nn.LayerNorm(2 * in_dim),
        nn.ReLU(),
        nn.Identity(),
        nn.Linear(2 * in_dim, out_dim),
    ]
    if final_norm:
        layers.append(nn.LayerNorm(out_dim, elementwise_affine=False))
    return nn.Sequential(*layers)


class TwoStreamModel(nn.Module):
    """S2 and S1 backbones, concatenated and reduced: ``forward(s2, s1) -> (B, output_dim)``.

    Args:
        s2_backbone: Encoder of ``(B, T, 11)`` S2 sequences.
        s1_backbone: Encoder of ``(B, T, 3)`` S1 sequences.
        dim_reducer: Maps the concatenated backbone outputs to the embedding.
        keep_dims: Keep only this many leading output dimensions (v2 Matryoshka prefixes); None keeps all.
    """

    def __init__(
        self, s2_backbone: nn.Module, s1_backbone: nn.Module, dim_reducer: nn.Module, keep_dims: int | None = None
    ) -> None:
        super().__init__()
        self.s2_backbone = s2_backbone
        self.s1_backbone = s1_backbone
        self.dim_reducer = dim_reducer
        self.keep_dims = keep_dims

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """Embed a batch of pixels."""
        fused = torch.cat((self.s2_backbone(s2), self.s1_backbone(s1)), dim=-1)
        out: torch.Tensor = self.dim_reducer(fused)
        return out if self.keep_dims is None else out[:, : self.keep_dims]
