"""Scoring generated images with a digit classifier trained on the real training data.

    Fréchet distance (Heusel et al., 2017, "FID" when the features are Inception's):
        FD = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})
    between Gaussians fitted to the classifier's penultimate-layer features of two image sets; 0 for identical
    feature statistics, larger the further the samples are from the real digits.
    Mean confidence: the average of max_c p(c | x) over the samples (Salimans et al.'s Inception-score idea in
    its simplest form): digit-like samples get confident predictions, garbage gets hesitant ones.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Splits
from ..errors import VgmError


class DigitClassifier(nn.Module):
    """An MLP x -> features (ReLU, `feature_dim`) -> 10 logits; `features(x)` is the penultimate layer."""

    def __init__(self, input_dim: int, hidden: int = 256, feature_dim: int = 64, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class Scorer:
    """A trained classifier and its accuracy on the real test split (its credentials as a judge)."""

    net: DigitClassifier
    test_accuracy: float

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> np.ndarray:
        self.net.eval()
        return self.net.features(x.float()).double().numpy()

    @torch.no_grad()
    def confidence(self, x: torch.Tensor) -> float:
        """Mean over x of the classifier's top-class probability."""
        self.net.eval()
        return F.softmax(self.net(x.float()), dim=-1).max(-1).values.mean().item()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.net(x.float()).argmax(-1)

    def frechet(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Fréchet distance between the feature statistics of image sets a and b."""
        return frechet_distance(self.features(a), self.features(b))


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """FD between Gaussians fitted to two (N, D) feature arrays (scipy.linalg.sqrtm for the matrix root)."""
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1] or min(len(fa), len(fb)) < 2:
        raise VgmError(f"Fréchet distance needs two (N >= 2, D) feature arrays, got {fa.shape} and {fb.shape}")
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca, cb = np.atleast_2d(np.cov(fa, rowvar=False)), np.atleast_2d(np.cov(fb, rowvar=False))
    eps = 1e-6 * np.eye(ca.shape[0])      # dead ReLU features make both covariances singular: nudge them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = np.real(scipy.linalg.sqrtm((ca + eps) @ (cb + eps)))
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * root)))


def train_scorer(data: Splits, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> Scorer:
    """Train a DigitClassifier on data.train (+ val) with its labels; report its accuracy on data.test."""
    if data.train_labels is None or data.test_labels is None:
        raise VgmError(f"dataset {data.name!r} has no labels, so no digit classifier can be trained on it")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.cat([data.train, data.val]).float().cpu()
    y = torch.cat([data.train_labels, data.val_labels]).cpu()
    net = DigitClassifier(x[0].numel())
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    scorer = Scorer(net.eval(), 0.0)
    scorer.test_accuracy = (scorer.predict(data.test.cpu()) == data.test_labels.cpu()).float().mean().item()
    return scorer
