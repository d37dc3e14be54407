"""`vgm metrics RUN_DIR`: every disentanglement metric of a model trained on dSprites, from fresh grid samples;
for a run on any other data with class labels (digits, MNIST, an image folder with class sub-folders, an .npz
with labels), what its codes say about the label.

With the label as the one known factor: MIG and SAP (is the label's information in one code dimension?), DCI
completeness and informativeness (DCI disentanglement is 1 by definition with one factor, so it is not shown),
and a linear probe: a logistic regression on the standardised codes of the training split, its accuracy on the
test split's codes, beside the majority class's share (chance). For a conditional model (cvae) the codes are
q(z|x, y)'s means, so the probe measures how much of the label the latent code still carries.

Beside FactorVAE's own pruning (std of the code over the data >= 0.05) it counts the dimensions active by KL:
mean over the images of KL(q(z_d|x) ‖ N(0, 1)) above KL_ACTIVE nats. A dimension the model does not use has
q(z_d|x) ≈ N(0, 1) for every x and a KL near 0 whatever the spread of its mean; one that carries information
pays for it in KL (several nats for a dSprites factor).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.distributions import Independent, Normal
from tqdm.auto import tqdm

from ..errors import VgmError
from ..registry import register_command
from ..metrics.beta_vae_score import beta_vae_score, check_sizes, represent
from ..metrics.dci import IMPORTANCE_MODELS, dci
from ..metrics.factor_vae_score import factor_vae_score
from ..metrics.mig import constant_factors, mig
from ..metrics.sap import sap

# nats: a dimension counts as active when its mean KL exceeds this (the 0.1 of the posterior-collapse literature;
# an unused β-VAE dimension sits at ~0.01, a dSprites factor costs 1–4 nats)
KL_ACTIVE = 0.1


def encoder_of(model, device=None, batch_size: int = 2048) -> Callable[[np.ndarray], np.ndarray]:
    """images (N, C, H, W) NumPy -> encoder means (N, d) NumPy, in eval mode and without gradients."""
    device = device or model.device

    @torch.no_grad()
    def encode(images: np.ndarray) -> np.ndarray:
        model.eval()
        x = torch.as_tensor(images, dtype=torch.float32)
        return torch.cat([model.encode(x[i:i + batch_size].to(device)).mean.cpu()
                          for i in range(0, len(x), batch_size)]).numpy()
    return encode


def gaussian_kl(mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sd²) ‖ N(0, 1)) elementwise, closed form: (mu² + sd² − 1)/2 − log sd."""
    return 0.5 * (mu.square() + sd.square() - 1.0) - torch.log(sd)


def gaussian(dist) -> Normal | None:
    """The diagonal Normal of a distribution, or None when it is something else."""
    base = dist.base_dist if isinstance(dist, Independent) else dist
    return base if isinstance(base, Normal) else None


def standard_prior(model) -> bool:
    """Whether the model's prior is the factorised N(0, I) that the per-dimension KL is taken against."""
    prior = gaussian(getattr(model, "prior", None))
    return prior is not None and bool((prior.loc == 0).all() and (prior.scale == 1).all())


def kl_of(model, device=None, batch_size: int = 2048) -> Callable[[np.ndarray], np.ndarray] | None:
    """images -> (N, d) KL(q(z_d|x) ‖ N(0, 1)) per image and dimension; None unless q(z|x) is a diagonal
    Gaussian and the prior is N(0, I) (an autoencoder's point mass, an IAF posterior, a VampPrior or a flow
    prior: the per-dimension KL to N(0, 1) is not the model's KL there)."""
    device = device or model.device
    with torch.no_grad():
        if not standard_prior(model):
            return None
        if gaussian(model.encode(torch.zeros(1, *model.config.input_shape, device=device))) is None:
            return None

    @torch.no_grad()
    def kl(images: np.ndarray) -> np.ndarray:
        model.eval()
        x = torch.as_tensor(images, dtype=torch.float32)
        out = []
        for i in range(0, len(x), batch_size):
            q = gaussian(model.encode(x[i:i + batch_size].to(device)))
            out.append(gaussian_kl(q.loc.double(), q.scale.double()).cpu())
        return torch.cat(out).numpy()
    return kl


def stages(names: list[str], progress: bool):
    """Yield the names, showing progress on stderr: a tqdm bar on a terminal, else one plain line per stage."""
    if not progress:
        yield from names
        return
    if sys.stderr.isatty():
        with tqdm(total=len(names), desc="vgm metrics", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
            for name in names:
                bar.set_postfix_str(name)                       # what runs now; the count is what is done
                yield name
                bar.update()
        return
    for i, name in enumerate(names, 1):
        print(f"vgm metrics: [{i}/{len(names)}] {name}", file=sys.stderr, flush=True)
        yield name


def score_all(encode: Callable, dataset, n_codes: int = 10000, n_train: int = 10000, n_eval: int = 5000,
              batch_size: int = 64, n_variance: int = 10000, dci_model: str = "gbt", seed: int = 0,
              kl: Callable | None = None, progress: bool = False) -> dict:
    """MIG, SAP, DCI on n_codes random grid points; β-VAE and FactorVAE scores with n_train / n_eval points.

    kl: images -> (N, d) per-dimension KL (see kl_of); when given, 'kl_per_dim' (mean over the n_codes
    images, nats) and 'active_dims_kl' (how many exceed KL_ACTIVE) are added. Sizes are checked before any
    work, so that a bad size fails at once rather than after the slow metrics.
    """
    check_sizes(n_codes=n_codes, n_train=n_train, n_eval=n_eval, batch_size=batch_size, n_variance=n_variance)
    for name, v, why in (("n-codes", n_codes, "MIG, SAP and DCI compare codes"),
                         ("n-train", n_train, "the β-VAE score's classifier needs two classes"),
                         ("batch-size", batch_size, "a variance needs two points"),
                         ("n-variance", n_variance, "a variance needs two points")):
        if v < 2:
            raise VgmError(f"{name} must be >= 2 ({why}), got {v}")
    rng = np.random.default_rng(seed)
    factors = dataset.sample_factors(n_codes, rng)
    steps = {"codes": lambda: represent(encode, dataset, factors)}
    if kl is not None:
        steps["kl"] = lambda: represent(kl, dataset, factors).mean(0)
    steps.update({
        "mig": lambda: mig(out["codes"], factors),
        "sap": lambda: sap(out["codes"], factors, seed=seed),
        "dci": lambda: dci(out["codes"], factors, model=dci_model, seed=seed),
        "beta_vae_score": lambda: beta_vae_score(encode, dataset, n_train, n_eval, batch_size, seed),
        "factor_vae_score": lambda: factor_vae_score(encode, dataset, n_train, n_eval, batch_size, n_variance,
                                                     seed=seed)})
    out, seconds = {}, {}
    for name in stages(list(steps), progress):
        t0 = time.perf_counter()
        out[name] = steps[name]()
        seconds[name] = round(time.perf_counter() - t0, 2)
    codes = out.pop("codes")
    res = {**out, "latent_dims": int(codes.shape[1]), "constant_factors": constant_factors(factors)}
    if kl is not None:
        per_dim = res.pop("kl")
        res.update(kl_per_dim=per_dim.tolist(), kl_active_threshold=KL_ACTIVE,
                   active_dims_kl=int((per_dim > KL_ACTIVE).sum()))
    return {**res, "seconds": seconds}


def codes_of(model, x, y=None, device=None, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray | None]:
    """Encoder means (N, d) of examples x (N, ...) (a conditional model is given the labels y), and the
    (N, d) KL(q(z_d|x) ‖ N(0, 1)) where q is a diagonal Gaussian and the prior N(0, I) (else None; see kl_of)."""
    device = device or model.device
    standard = standard_prior(model)
    means, kls = [], []
    with torch.no_grad():
        model.eval()
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            m = model.given(y[i:i + batch_size].to(device)) if getattr(model, "conditional", False) else model
            q = m.encode(xb)
            means.append(q.mean.double().cpu())
            g = gaussian(q) if standard else None
            kls.append(None if g is None else gaussian_kl(g.loc.double(), g.scale.double()).cpu())
    kl = None if any(k is None for k in kls) else torch.cat(kls).numpy()
    return torch.cat(means).numpy(), kl


def linear_probe(train_codes: np.ndarray, train_y: np.ndarray, test_codes: np.ndarray, test_y: np.ndarray,
                 seed: int = 0) -> dict:
    """Test accuracy of a logistic regression on standardised codes, and chance (the majority class's share of
    the test labels)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise VgmError("the training labels take one value only: a probe needs two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train_codes, train_y)
    counts = np.bincount(test_y)
    return {"accuracy": float(np.mean(probe.predict(test_codes) == test_y)),
            "train_accuracy": float(np.mean(probe.predict(train_codes) == train_y)),
            "chance": float(counts.max() / counts.sum())}


def score_labels(model, splits, n_codes: int = 10000, n_train: int = 10000, dci_model: str = "gbt", seed: int = 0,
                 progress: bool = False) -> dict:
    """The label metrics (module doc) of a model on a run's data: codes of up to n_codes test examples and
    n_train training examples, drawn with `seed`."""
    from ..run import checked_split

    if splits.train_labels is None or splits.test_labels is None:
        raise VgmError(f"{splits.name or 'the data'} have no labels: vgm metrics needs dSprites' factors or class "
                       "labels (class sub-folders of an image folder, 'y' or 'train_labels'/'test_labels' in an .npz)")
    rng = np.random.default_rng(seed)

    def draw(split: str, labels: torch.Tensor, n: int):
        x = checked_split(model, splits, split)
        idx = np.sort(rng.choice(len(x), size=min(n, len(x)), replace=False))
        t = torch.as_tensor(idx)
        return x[t], labels[t]

    xs_test, ys_test = draw("test", splits.test_labels, n_codes)
    xs_train, ys_train = draw("train", splits.train_labels, n_train)
    y_test, y_train = ys_test.numpy()[:, None], ys_train.numpy()
    steps = {"codes": lambda: (codes_of(model, xs_test, ys_test), codes_of(model, xs_train, ys_train)[0]),
             "mig": lambda: mig(out["codes"][0][0], y_test),
             "sap": lambda: sap(out["codes"][0][0], y_test, seed=seed),
             "dci": lambda: dci(out["codes"][0][0], y_test, model=dci_model, seed=seed),
             "probe": lambda: linear_probe(out["codes"][1], y_train, out["codes"][0][0], y_test[:, 0], seed=seed)}
    out, seconds = {}, {}
    for name in stages(list(steps), progress):
        t0 = time.perf_counter()
        out[name] = steps[name]()
        seconds[name] = round(time.perf_counter() - t0, 2)
    (codes, kl), _ = out.pop("codes")
    out["dci"].pop("disentanglement")                   # 1 by definition with one factor
    res = {**out, "latent_dims": int(codes.shape[1]), "n_test": len(y_test), "n_train": len(y_train),
           "classes": int(max(splits.train_labels.max(), splits.test_labels.max())) + 1}
    if kl is not None:
        per_dim = kl.mean(0)
        res.update(kl_per_dim=per_dim.tolist(), kl_active_threshold=KL_ACTIVE,
                   active_dims_kl=int((per_dim > KL_ACTIVE).sum()))
    return {**res, "seconds": seconds}


def label_table(res: dict) -> list[tuple[str, str]]:
    """(label, value) rows of the printed report of a labelled run."""
    p, d = res["probe"], res["latent_dims"]
    rows = [("MIG (label)", f"{res['mig']:.4f}"), ("SAP (label)", f"{res['sap']:.4f}")]
    rows += [(f"DCI {k} (label)", f"{v:.4f}") for k, v in res["dci"].items()]
    rows += [("linear probe accuracy", f"{p['accuracy']:.4f}  (train {p['train_accuracy']:.4f}; chance "
                                       f"{p['chance']:.4f}; {res['classes']} classes)")]
    rows += kl_rows(res, d)
    return rows


def kl_rows(res: dict, d: int) -> list[tuple[str, str]]:
    if "active_dims_kl" not in res:
        return [("active dims, KL", "— (needs a Gaussian q(z|x) and an N(0, I) prior)")]
    return [("active dims, KL", f"{res['active_dims_kl']} of {d}  (mean KL(q(z_d|x) ‖ N(0,1)) > "
                                f"{res['kl_active_threshold']:g} nats)"),
            ("KL per dim (nats)", " ".join(f"{v:.3f}" for v in res["kl_per_dim"]))]


def table(res: dict, factor_names) -> list[tuple[str, str]]:
    """(label, value) rows of the printed report."""
    fv, d = res["factor_vae_score"], res["latent_dims"]
    rows = [("MIG", f"{res['mig']:.4f}"), ("SAP", f"{res['sap']:.4f}")]
    rows += [(f"DCI {k}", f"{v:.4f}") for k, v in res["dci"].items()]
    rows += [("β-VAE score", f"{res['beta_vae_score']['eval_accuracy']:.4f}"),
             ("FactorVAE score", f"{fv['eval_accuracy']:.4f}"),
             ("active dims, FactorVAE", f"{fv['active_dims']} of {d}  (std of the code over the data >= 0.05)")]
    rows += kl_rows(res, d)
    if res["constant_factors"]:
        names = ", ".join(factor_names[k] for k in res["constant_factors"])
        rows.append(("note", f"constant in the sample, left out of MIG and SAP: {names}"))
    return rows


@register_command("metrics")
def cmd_metrics(argv: list[str]) -> int:
    from ..checkpoint import load
    from ..run import read_run_config, run_data
    from ..options import Parser, positive_int, seed
    from ..data.dsprites import DSprites
    from ..train import resolve_device

    p = Parser(prog="vgm metrics", description="disentanglement metrics (MIG, SAP, DCI, β-VAE and FactorVAE "
                                               "scores) of a run trained on dsprites or dsprites32; for a run on "
                                               "other data with class labels, what its codes say about the label "
                                               "(MIG, SAP, DCI completeness and informativeness, a linear probe)")
    p.add_argument("run_dir", type=Path, help="run folder of a model with an encoder (an autoencoder or a VAE)")
    p.add_argument("--n-codes", type=positive_int, default=10000,
                   help="grid points (dSprites), or test examples (labelled data), for MIG, SAP and DCI")
    p.add_argument("--n-train", type=positive_int, default=10000,
                   help="training points of the β-VAE / FactorVAE scores, or training examples of the probe")
    p.add_argument("--data-dir", default=None, help="where a labelled run's data now are, if moved (default: where they were when it trained)")
    p.add_argument("--n-eval", type=positive_int, default=5000, help="evaluation points of the β-VAE / FactorVAE scores")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per point of the β-VAE / FactorVAE scores")
    p.add_argument("--n-variance", type=positive_int, default=10000, help="images for the FactorVAE score's code scales")
    p.add_argument("--dci-model", choices=IMPORTANCE_MODELS, default="gbt",
                   help="importance model of DCI: gradient-boosted trees, or a faster random forest")
    p.add_argument("--seed", type=seed, default=0, help="seed of the factor draws and the classifiers (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (default: progress shown)")
    a = p.parse_args(argv)
    cfg = read_run_config(a.run_dir)
    data = cfg.get("data", {}).get("data")
    model = load(a.run_dir, resolve_device(a.device))
    if not callable(getattr(model, "encode", None)):
        raise VgmError(f"{a.run_dir} holds a {model.kind} model, which has no encoder to score; vgm metrics "
                       "needs a model with an encoder (an autoencoder or a VAE)")
    if data not in ("dsprites", "dsprites32"):
        _, splits = run_data(a.run_dir, a.data_dir)
        torch.manual_seed(a.seed)
        res = {"run": str(a.run_dir), "kind": model.kind, "data": splits.name or data,
               **score_labels(model, splits, a.n_codes, a.n_train, a.dci_model, a.seed, progress=not a.quiet)}
        if a.json:
            print(json.dumps(res))
            return 0
        return print_rows(f"{a.run_dir} ({model.kind}) on {res['data']}, {res['n_test']} test examples:",
                          label_table(res))
    shape = tuple(model.config.input_shape)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise VgmError(f"the model takes inputs of shape {shape}, not dSprites images")
    torch.manual_seed(a.seed)
    grid = DSprites(shape[1])
    res = {"run": str(a.run_dir), "kind": model.kind, "data": data,
           **score_all(encoder_of(model), grid, a.n_codes, a.n_train, a.n_eval, a.batch_size, a.n_variance,
                       a.dci_model, a.seed, kl=kl_of(model), progress=not a.quiet)}
    if a.json:
        print(json.dumps(res))
        return 0
    return print_rows(f"{a.run_dir} ({model.kind}) on {data}, {a.n_codes} codes:", table(res, grid.factor_names))


def print_rows(title: str, rows: list[tuple[str, str]]) -> int:
    width = max(len(label) for label, _ in rows)
    print(title)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    return 0
