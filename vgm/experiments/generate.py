"""generate: prior samples and latent interpolations between pairs of test digits.

A VAE decodes z ~ N(0, I) into digits, and the straight line between the posterior means of two test digits
decodes into a path from one to the other; beside it, the same pair cross-faded in pixel space. The numbers
(no direction is claimed; they describe what the figures show): the samples' Fréchet distance to the test digits
(vgm.sample_quality), and at the middle of 200 paths the classifier's confidence, the distance to the nearest
training digit and the Fréchet distance, for the latent path and for the cross-fade. A VAE with z = 2 shows its whole
latent manifold: decoded z on a grid of the prior's quantiles (as in Kingma & Welling, 2014, fig. 4).
"""
from __future__ import annotations

from pathlib import Path

import torch
from scipy.stats import norm

from ..data import Splits
from ..registry import register_experiment
from ..tools.sample_quality import train_scorer
from ..models.vae import VAE
from . import command_line, write_results
from .common import batch_size, is_small, datasets, pyplot, save_figure, show_grid, train, vae_kw

CLAIM = "A VAE generates: prior samples, and latent interpolations between pairs of test digits."
STEPS = 10


def pairs_of_different_digits(labels: torch.Tensor, n: int, seed: int) -> list[tuple[int, int]]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g).tolist()
    pairs, used = [], set()
    for i in perm:
        for j in perm:
            if i != j and labels[i] != labels[j] and (int(labels[i]), int(labels[j])) not in used and \
                    i not in {p for pr in pairs for p in pr} and j not in {p for pr in pairs for p in pr}:
                pairs.append((i, j))
                used.add((int(labels[i]), int(labels[j])))
                break
        if len(pairs) == n:
            break
    return pairs


@register_experiment("generate", data="labelled images")
def run(out: Path, quick: bool, seed: int, data_dir: str | None, user_data: Splits | None = None) -> dict:
    plt = pyplot()
    rows, figures, summary = [], [], []
    t = torch.linspace(0, 1, STEPS)
    for name, data in datasets(data_dir, data=user_data):
        small = is_small(data)
        epochs = (15 if quick else 100) if small else (3 if quick else 20)
        hidden = (256, 128) if small else (512, 256)
        latent = 8 if small else 16
        kw = dict(hidden=hidden, batch_size=batch_size(small), **vae_kw(name))
        vae, _ = train(VAE, data, epochs, seed, latent_dim=latent, **kw)
        scorer = train_scorer(data, epochs=30 if small else 10, seed=seed)
        torch.manual_seed(seed + 1)
        samples = vae.sample(len(data.test))
        pairs = pairs_of_different_digits(data.test_labels, 8, seed)
        a, b = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
        xa, xb = data.test[a], data.test[b]
        with torch.no_grad():
            za, zb = vae.encode(xa).mean, vae.encode(xb).mean
            path_z = za[:, None] + t[None, :, None] * (zb - za)[:, None]          # (pairs, steps, d)
            latent_path = vae.decode(path_z).mean                                 # (pairs, steps, C, H, W)
        pixel_path = xa[:, None] + t.view(1, -1, 1, 1, 1) * (xb - xa)[:, None]
        flat = lambda p: p.reshape(-1, *data.shape)
        ends = scorer.predict(flat(latent_path[:, [0, -1]])).view(-1, 2)
        mids = midpoints(vae, data, 200, seed)
        train_flat = data.train.flatten(1)
        nearest = lambda x: torch.cdist(x.flatten(1), train_flat).min(1).values.mean().item()
        row = {"data": name, "prior_samples_frechet": scorer.frechet(samples, data.test),
               "real_train_frechet_floor": scorer.frechet(data.train[:len(data.test)], data.test),
               "prior_samples_confidence": scorer.confidence(samples),
               "midpoint_confidence_latent": scorer.confidence(mids["latent"]),
               "midpoint_confidence_pixel": scorer.confidence(mids["pixel"]),
               "midpoint_nearest_train_dist_latent": nearest(mids["latent"]),
               "midpoint_nearest_train_dist_pixel": nearest(mids["pixel"]),
               "midpoint_frechet_latent": scorer.frechet(mids["latent"], data.test),
               "midpoint_frechet_pixel": scorer.frechet(mids["pixel"], data.test),
               "shown_paths_ending_on_true_labels": ((ends[:, 0] == data.test_labels[a]) &
                                                     (ends[:, 1] == data.test_labels[b])).float().mean().item(),
               "classifier_test_acc": scorer.test_accuracy}
        rows.append(row)
        summary.append(row)
        fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1.25, 1.25]})
        show_grid(axes[0], samples[:64], f"prior samples, z ~ N(0, I) (z = {latent})")
        show_grid(axes[1], flat(latent_path), f"latent interpolation (posterior means), {STEPS} steps", ncol=STEPS)
        show_grid(axes[2], flat(pixel_path), "pixel cross-fade between the same digits", ncol=STEPS)
        fig.suptitle(f"{name}: generation and interpolation")
        figures.append(save_figure(fig, out / f"generate_{name}.png"))
        if small:      # the whole manifold of a 2-d latent space
            vae2, _ = train(VAE, data, epochs, seed, latent_dim=2, **kw)
            q = torch.as_tensor(norm.ppf(torch.linspace(0.03, 0.97, 15).double().numpy()), dtype=torch.float32)
            zz = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)
            with torch.no_grad():
                manifold = vae2.decode(zz).mean
            fig, ax = plt.subplots(figsize=(6, 6))
            show_grid(ax, manifold, "VAE with z = 2: decoded prior quantiles (3% … 97%)", ncol=15)
            figures.append(save_figure(fig, out / f"manifold_{name}.png"))
    verdict = "; ".join(
        f"{r['data']}: prior samples at Fréchet distance {r['prior_samples_frechet']:.1f} from the test digits (real "
        f"digits: {r['real_train_frechet_floor']:.1f}), classifier confidence {r['prior_samples_confidence']:.2f}; "
        f"path midpoints, latent vs cross-fade: confidence {r['midpoint_confidence_latent']:.2f} vs "
        f"{r['midpoint_confidence_pixel']:.2f}, nearest training digit {r['midpoint_nearest_train_dist_latent']:.2f} vs "
        f"{r['midpoint_nearest_train_dist_pixel']:.2f}, Fréchet distance {r['midpoint_frechet_latent']:.1f} vs "
        f"{r['midpoint_frechet_pixel']:.1f}" for r in summary)
    return write_results(
        out, name="generate", title="Generation: prior samples and latent interpolations", claim=CLAIM,
        command=command_line("generate", quick, seed, data_dir, user_data), table=rows, figures=figures, verdict=verdict,
        held=None,
        notes="Shown: 8 pairs of test digits with different labels, straight lines between posterior means, "
              "decoded to the mean of p(x|z). Midpoint numbers: 200 random pairs of test digits with different labels, "
              "the image halfway along each path; distances are Euclidean in pixel space. Fréchet distance as in "
              "ae-vs-vae (lower is better): it compares whole sets, and the cross-fades keep the test set's mixture "
              "of strokes, which can favour them even where each image is a double exposure.")


def midpoints(vae, data, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Halfway images between n random pairs of test digits with different labels: decoded from the middle of
    the latent line, and cross-faded in pixel space."""
    g = torch.Generator().manual_seed(seed + 2)
    a, b = torch.randint(0, len(data.test), (2, 2 * n), generator=g)
    keep = (data.test_labels[a] != data.test_labels[b]).nonzero().squeeze(1)[:n]
    xa, xb = data.test[a[keep]], data.test[b[keep]]
    with torch.no_grad():
        latent = vae.decode((vae.encode(xa).mean + vae.encode(xb).mean) / 2).mean
    return {"latent": latent, "pixel": (xa + xb) / 2}
