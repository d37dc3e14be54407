"""Posterior collapse in a sentence VAE, and its remedies (Bowman et al., 2016; Fu et al., 2019; Kingma et al., 2016).

The same seqvae on the census first names, trained plainly and with one remedy each: linear KL annealing,
cyclical KL annealing, word dropout, free bits. For each: the KL term through training, and on the test split
the final KL, the active units, the ELBO and the importance-weighted log p(x), plus samples from the prior.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from ..data import load as load_data
from ..evaluate import evaluate
from ..plots import save_figure
from ..registry import register_experiment
from ..models.seqvae import SeqVAE, SeqVAEConfig
from ..data.tokens import to_text
from ..train import TrainConfig, fit
from . import command_line, write_results

CLAIM = ("A VAE with an autoregressive RNN decoder, trained plainly, lets KL(q(z|x) ‖ p(z)) collapse towards 0 "
         "and leaves z unused; KL annealing, word dropout and free bits keep information in z (Bowman et al., "
         "2016; Fu et al., 2019; Kingma et al., 2016).")


def variants(steps: int) -> dict[str, dict]:
    """Config changes of each run; annealing ramps over half of training (cyclical: 4 cycles)."""
    return {"plain": {},
            "KL annealing (linear)": {"anneal": "linear", "anneal_steps": max(1, steps // 2)},
            "KL annealing (cyclical)": {"anneal": "cyclical", "anneal_steps": max(1, steps // 4)},
            "word dropout 0.5": {"word_dropout": 0.5},
            "free bits 0.25": {"free_bits": 0.25}}


@register_experiment("collapse")
def run(out: Path, quick: bool = False, seed: int = 0, data_dir: str | None = None) -> dict:
    out = Path(out)
    data = load_data("names")
    epochs, iw = (4, 50) if quick else (40, 500)
    tc = TrainConfig(epochs=epochs, batch_size=128, lr=2e-3, seed=seed, device="cpu")
    steps = epochs * math.ceil(len(data.train) / tc.batch_size)
    base = SeqVAEConfig(latent_dim=16, hidden=128, embed_dim=32, **{k: data.meta[k] for k in
                                                                   ("likelihood", "alphabet", "input_dim", "max_len")})
    rows, curves = [], {}
    for name, change in variants(steps).items():
        torch.manual_seed(seed)
        model = SeqVAE(dataclasses.replace(base, **change))
        history = fit(model, data, tc, progress=False)
        torch.manual_seed(seed)
        ev = evaluate(model, data.test, iw_samples=iw, batch_size=500)
        samples = to_text(model.sample(8), base.alphabet)
        curves[name] = ([r["train"]["kl"] for r in history], [r["val"]["kl"] for r in history])
        best = max(history, key=lambda r: r["val"]["elbo"])
        rows.append({"variant": name, "selected epoch": best["epoch"], "train KL (last epoch)": history[-1]["train"]["kl"],
                     "test KL": ev["kl"],
                     "active units": ev["active_units"], "test ELBO": ev["elbo"], f"test log p(x) (K={iw})": ev["log_px"],
                     "perplexity": ev["perplexity"], "samples": ", ".join(samples),
                     "kl_per_unit": ev["kl_per_unit"]})
    figure(out / "collapse.png", curves, rows)
    table = [{k: v for k, v in r.items() if k != "kl_per_unit"} for r in rows]
    plain, remedies = rows[0], rows[1:]
    held = all(r["test KL"] > plain["test KL"] and r["active units"] >= plain["active units"] for r in remedies)
    verdict = ("test KL / active units: " + "; ".join(f"{r['variant']} {r['test KL']:.2f} nats / {r['active units']}"
                                                    for r in rows)
               + (" — every remedy keeps more information in z than plain training" if held
                  else " — not every remedy beat plain training here"))
    return write_results(out, name="collapse", title="Posterior collapse in a sentence VAE, and its remedies",
                         claim=CLAIM, command=command_line("collapse", quick, seed, None), table=table,
                         figures=["collapse.png"], verdict=verdict, held=held,
                         notes=(f"seqvae (GRU, 128 hidden, 16 latent units) on {len(data.train)} census first names, "
                                f"{epochs} epochs of Adam (lr {tc.lr}, batch {tc.batch_size}); each run keeps the epoch "
                                "of best validation ELBO (the test columns are that model's). Active units: "
                                "Var_x E_q[z_u] > 0.01 (Burda et al., 2016). Samples: prior draws, same seed for every run."),
                         kl_per_unit={r["variant"]: r["kl_per_unit"] for r in rows})


def figure(path: Path, curves: dict, rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), layout="tight")
    for name, (train_kl, val_kl) in curves.items():
        line, = a.plot(range(1, len(val_kl) + 1), val_kl, label=name)
        a.plot(range(1, len(train_kl) + 1), train_kl, ":", color=line.get_color())
    a.set(xlabel="epoch", ylabel="KL(q(z|x) ‖ p(z)) [nats]", title="KL term (solid: validation, dotted: training)")
    a.legend(fontsize=8)
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        kl = r["kl_per_unit"]
        b.bar([u + i * width for u in range(len(kl))], kl, width, label=f"{r['variant']} ({r['active units']} active)")
    b.set(xlabel="latent unit", ylabel="test KL per unit [nats]", title="where the information goes")
    b.legend(fontsize=7)
    save_figure(fig, path, dpi=110)
