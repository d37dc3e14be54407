"""An autoregressive prior over a grid of discrete codes: a small causal transformer (for vqvae).

    p(c) = Π_t p(c_t | c_<t),   c the H·W code indices read in raster order
Position t sees a start token and c_<t (a causal attention mask), so log p(c) is exact and one pass scores a whole
grid; sampling takes H·W passes. No convolutional blind spot (unlike a plain PixelCNN), and a 7x7 grid of MNIST
codes is a 49-token sequence, which a two-layer transformer models in milliseconds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CodePrior(nn.Module):
    """Causal transformer over `length` tokens from a vocabulary of `codes`."""

    def __init__(self, codes: int, length: int, width: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.codes, self.length = codes, length
        self.embed = nn.Embedding(codes + 1, width)          # index `codes` is the start token
        self.position = nn.Parameter(torch.zeros(length, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codes)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, L) code indices -> (N, L, K) logits of p(c_t | c_<t) (the input shifted right behind a start token)."""
        start = torch.full_like(codes[:, :1], self.codes)
        tokens = torch.cat([start, codes[:, :-1]], dim=1)
        t = tokens.shape[1]
        h = self.embed(tokens) + self.position[:t]
        h = self.body(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """Per example −log p(c) in nats; codes (N, L)."""
        lg = self.logits(codes)
        return F.cross_entropy(lg.transpose(1, 2), codes, reduction="none").sum(1)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """(n, L) codes drawn one position at a time from softmax(logits / T)."""
        codes = torch.zeros(n, self.length, dtype=torch.long, device=self.position.device)
        for t in range(self.length):
            lg = self.logits(codes[:, :t + 1])[:, t] / temperature
            codes[:, t] = torch.multinomial(F.softmax(lg, dim=-1), 1).squeeze(1)
        return codes
