"""Multimodal mixture-of-experts feed-forward layer (token-choice top-k, no capacity limit).

Every token is routed to its top_k experts by a linear router (plus an optional learned bias per
modality, so experts are free to specialise by modality); the expert outputs are mixed with the
renormalised router probabilities (Mixtral style; with top_k = 1 the raw probability, Switch
style). Dispatch is batched: the (token, expert) pairs are sorted by expert, each expert runs one
matmul on its contiguous slice, and the results are put back in token order by the inverse
permutation (no scatter-add) and mixed by the gates.

No token is ever dropped, so a token's output depends on that token alone: the layer cannot leak
information across time blocks (capacity-based dropping would).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.config import MODALITIES, ModelConfig


def load_balancing_loss(probs: torch.Tensor, topk_idx: torch.Tensor, n_expert: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Switch/GShard auxiliary loss E * sum_e f_e * P_e, equal to 1 under perfectly uniform routing.

    probs: (N, E) router probabilities; topk_idx: (N, k) chosen experts; valid: (N,) bool tokens to count.
    f_e is the fraction of (token, slot) assignments sent to expert e (not differentiable), P_e the
    mean router probability of e (differentiable).
    """
    if valid is not None:
        probs, topk_idx = probs[valid], topk_idx[valid]
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    counts = torch.bincount(topk_idx.reshape(-1), minlength=n_expert).to(probs.dtype)  # (E,)
    f = counts / counts.sum()
    P = probs.mean(0)  # (E,)
    return n_expert * (f * P).sum()


class MoEFeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, E, Hd = cfg.d_model, cfg.n_expert, cfg.expert_width
        self.n_expert, self.top_k = E, cfg.top_k
        self.router = nn.Linear(D, E, bias=False)
        self.type_bias = nn.Parameter(torch.zeros(len(MODALITIES), E)) if cfg.modality_routing else None
        # experts' weights stacked: expert e is x -> gelu(x @ w_in[e] + b_in[e]) @ w_out[e] + b_out[e]
        self.w_in = nn.Parameter(torch.randn(E, D, Hd) * 0.02)
        self.b_in = nn.Parameter(torch.zeros(E, Hd))
        self.w_out = nn.Parameter(torch.randn(E, Hd, D) * 0.02 / (2 * cfg.n_layer) ** 0.5)
        self.b_out = nn.Parameter(torch.zeros(E, D))
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.router.weight, std=0.02)

    def route(self, x: torch.Tensor, types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, D), types (N,) -> probs (N, E) float32, gates (N, k), topk_idx (N, k)"""
        logits = self.router(x).float()  # (N, E)
        if self.type_bias is not None:
            logits = logits + self.type_bias[types]
        probs = logits.softmax(-1)
        gates, idx = probs.topk(self.top_k, dim=-1)  # (N, k)
        if self.top_k > 1:
            gates = gates / gates.sum(-1, keepdim=True)
        return probs, gates, idx

    def forward(self, x: torch.Tensor, types: torch.Tensor, valid: torch.Tensor | None = None):
        """x (B, L, D), types (L,) modality of each token, valid (B, L) tokens counted in the aux loss.

        Returns y (B, L, D), aux loss (scalar), topk_idx (B, L, k).
        """
        B, L, D = x.shape
        k = self.top_k
        xf = x.reshape(B * L, D)  # (N, D)
        probs, gates, idx = self.route(xf, types.repeat(B))
        aux = load_balancing_loss(probs, idx, self.n_expert, None if valid is None else valid.reshape(-1))

        flat = idx.reshape(-1)  # (N*k,) expert of each (token, slot)
        order = flat.argsort(stable=True)  # (token, slot) pairs grouped by expert
        counts = torch.bincount(flat, minlength=self.n_expert).tolist()
        xs = xf.index_select(0, order // k)  # (N*k, D) each pair's token, grouped by expert
        outs = []
        # unbind once: indexing w_in[e] per expert would make autograd zero-fill the whole stack E times
        experts = zip(self.w_in.unbind(0), self.b_in.unbind(0), self.w_out.unbind(0), self.b_out.unbind(0))
        for chunk, (w_in, b_in, w_out, b_out) in zip(xs.split(counts), experts):
            if chunk.shape[0]:
                outs.append(torch.addmm(b_out, F.gelu(torch.addmm(b_in, chunk, w_in)), w_out))  # (n_e, D)
        ys = torch.cat(outs)  # (N*k, D) in expert order
        ys = ys.new_empty(ys.shape).index_copy(0, order, ys)  # back to (token, slot) order: a permutation, no accumulation
        y = (ys.view(B * L, k, D) * gates[..., None].to(x.dtype)).sum(1)  # (N, D)
        return self.dropout(y.view(B, L, D)), aux, idx.view(B, L, k)


def expert_usage(routing: torch.Tensor, types: torch.Tensor, n_expert: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of each modality's (token, slot) assignments that go to each expert, per layer.

    routing: (n_layer, B, L, k) from `WorldModel.forward(...)["routing"]`; types: (L,);
    valid: (B, L) or None. Returns (n_layer, n_modalities, n_expert); rows of absent modalities are 0.
    """
    n_layer, B, L, k = routing.shape
    m = torch.as_tensor(types, device=routing.device)[None, :, None].expand(B, L, k)  # (B, L, k)
    keep = torch.ones(B, L, k, dtype=torch.bool, device=routing.device)
    if valid is not None:
        keep = keep & valid[..., None]
    out = torch.zeros(n_layer, len(MODALITIES), n_expert, device=routing.device)
    for layer in range(n_layer):
        pair = m[keep] * n_expert + routing[layer][keep]
        out[layer] = torch.bincount(pair, minlength=len(MODALITIES) * n_expert).view(len(MODALITIES), n_expert).float()
    return out / out.sum(-1, keepdim=True).clamp(min=1)
