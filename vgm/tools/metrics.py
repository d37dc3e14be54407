"""`vgm metrics RUN_DIR`: every disentanglement metric of a model trained on dSprites, from fresh grid samples."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import VgmError
from ..registry import register_command
from ..metrics.beta_vae_score import beta_vae_score, check_sizes, represent
from ..metrics.dci import IMPORTANCE_MODELS, dci
from ..metrics.factor_vae_score import factor_vae_score
from ..metrics.mig import mig
from ..metrics.sap import sap


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


def score_all(encode: Callable, dataset, n_codes: int = 10000, n_train: int = 10000, n_eval: int = 5000,
              batch_size: int = 64, n_variance: int = 10000, dci_model: str = "gbt", seed: int = 0) -> dict:
    """MIG, SAP, DCI on n_codes random grid points; β-VAE and FactorVAE scores with n_train / n_eval points."""
    check_sizes(n_codes=n_codes, n_train=n_train, n_eval=n_eval, batch_size=batch_size, n_variance=n_variance)
    rng = np.random.default_rng(seed)
    factors = dataset.sample_factors(n_codes, rng)
    codes = represent(encode, dataset, factors)
    out, seconds = {}, {}
    for name, fn in (("mig", lambda: mig(codes, factors)),
                     ("sap", lambda: sap(codes, factors, seed=seed)),
                     ("dci", lambda: dci(codes, factors, model=dci_model, seed=seed)),
                     ("beta_vae_score", lambda: beta_vae_score(encode, dataset, n_train, n_eval, batch_size, seed)),
                     ("factor_vae_score", lambda: factor_vae_score(encode, dataset, n_train, n_eval, batch_size,
                                                                  n_variance, seed=seed))):
        t0 = time.perf_counter()
        out[name] = fn()
        seconds[name] = round(time.perf_counter() - t0, 2)
    return {**out, "seconds": seconds}


@register_command("metrics")
def cmd_metrics(argv: list[str]) -> int:
    from ..checkpoint import load, read_json
    from ..options import Parser, seed
    from ..data.dsprites import DSprites
    from ..train import resolve_device

    p = Parser(prog="vgm metrics", description="disentanglement metrics (MIG, SAP, DCI, β-VAE and FactorVAE "
                                               "scores) of a run trained on dsprites or dsprites32")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n-codes", type=int, default=10000, help="grid points for MIG, SAP and DCI")
    p.add_argument("--n-train", type=int, default=10000, help="training points of the β-VAE / FactorVAE scores")
    p.add_argument("--n-eval", type=int, default=5000, help="evaluation points of the β-VAE / FactorVAE scores")
    p.add_argument("--batch-size", type=int, default=64, help="images per point of the β-VAE / FactorVAE scores")
    p.add_argument("--n-variance", type=int, default=10000, help="images for the FactorVAE score's code scales")
    p.add_argument("--dci-model", choices=IMPORTANCE_MODELS, default="gbt", help="importance model of DCI")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    cfg = read_json(a.run_dir / "config.json")
    data = cfg.get("data", {}).get("data")
    if data not in ("dsprites", "dsprites32"):
        raise VgmError(f"{a.run_dir} was trained on {data!r}; vgm metrics needs a dsprites or dsprites32 run")
    model = load(a.run_dir, resolve_device(a.device))
    shape = tuple(model.config.input_shape)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise VgmError(f"the model takes inputs of shape {shape}, not dSprites images")
    torch.manual_seed(a.seed)
    res = {"run": str(a.run_dir), "kind": model.kind, "data": data,
           **score_all(encoder_of(model), DSprites(shape[1]), a.n_codes, a.n_train, a.n_eval, a.batch_size,
                       a.n_variance, a.dci_model, a.seed)}
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{a.run_dir} ({model.kind}) on {data}:")
    print(f"  MIG              {res['mig']:.4f}")
    print(f"  SAP              {res['sap']:.4f}")
    for k, v in res["dci"].items():
        print(f"  DCI {k:<22} {v:.4f}")
    print(f"  β-VAE score      {res['beta_vae_score']['eval_accuracy']:.4f}")
    print(f"  FactorVAE score  {res['factor_vae_score']['eval_accuracy']:.4f} "
          f"({res['factor_vae_score']['active_dims']} active dims)")
    return 0
