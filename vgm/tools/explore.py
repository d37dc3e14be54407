"""`vgm explore RUN_DIR`: a local web page to look inside a trained model, served by the standard library.

What the page shows depends on the model:
    models of images with a diagonal-Gaussian q(z|x) over one vector (vae, betavae, tcvae, iwae, vamp, factorvae,
    dipvae; an ae's point q too)
        sliders, one per latent dimension, sorted by the dimension's mean KL(q(z_j|x) ‖ N(0, 1)) over the test
        examples shown on the map (inactive ones, KL < 0.1 nats, marked), decoding as they move; the map of the
        test set's posterior means (the latent itself when d ≤ 2, else PCA, or t-SNE on request); interpolation
        between two test examples along the line and the spherical path, with each point's ELBO; a drawn or
        uploaded image's q(z|x), reconstruction, ELBO, KL and nearest training examples (by posterior mean);
        for betavae / tcvae the traversal grid, and on dSprites the factor each dimension tracks best.
    flows (realnvp, maf, nsf, glow) on images    samples at a temperature, log p(x) and bits/dim of an image.
    sequence models on text (seqvae, vrnn)       samples; seqvae also interpolates between two typed strings.
Other runs (vectors, real-valued sequences, IAF or VQ posteriors, label-conditional models) are refused in one line.

The model is loaded once; every use of it (and of torch's random state) holds one lock, so the server's threads
never interleave inside it. No request reaches the file system: the page's three assets are read from the
package at start-up and served from a table of fixed paths. Every parameter is checked (length, finiteness,
range, count, size, image format and shape) and a bad one is an HTTP 4xx with a JSON {"error": message}.
"""
from __future__ import annotations

import base64
import io
import json
import math
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch

from ..errors import VgmError
from ..registry import register_command
from ..train import derived_seed
from .metrics import KL_ACTIVE    # nats: a dimension with a smaller mean KL is marked inactive, as `vgm metrics` counts

MAP_POINTS = 2000          # test examples on the map (the first ones): also those the KL per dimension is averaged on
NEAREST_POOL = 20000       # training examples searched for the nearest neighbours of an image (the first ones)
NEAREST_K = 8
ELBO_SAMPLES = 32          # z ~ q(z|x) draws averaged in each ELBO shown (the KL in closed form where there is one)
MAX_SAMPLES = 64
MAX_STEPS = 32
MAX_TRAVERSAL_STEPS = 21
MAX_TEMPERATURE = 5.0
MAX_BODY = 2 * 2 ** 20     # bytes of an uploaded or drawn image
MAX_DRAWN_SIDE = 1024      # pixels of a drawn image's side (it is rescaled to the model's size)
MAX_TEXT = 200             # characters of a typed sequence
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadRequest(Exception):
    """A request the server refuses: HTTP `status` with a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ----- images ----------------------------------------------------------------------------------------------

def png(x: torch.Tensor) -> bytes:
    """One image (C, H, W) with values in [0, 1] (clipped) -> PNG bytes, grey for C = 1, RGB for C = 3."""
    a = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    from PIL import Image
    img = Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(x: torch.Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png(x)).decode()


def strip(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> one (C, H, N·(W + 1) − 1) image, the N side by side with a 1-pixel white gap."""
    n, c, h, w = images.shape
    out = torch.ones(c, h, n * (w + 1) - 1)
    for i in range(n):
        out[:, :, i * (w + 1): i * (w + 1) + w] = images[i].clamp(0, 1)
    return out


def open_image(body: bytes):
    """The PIL image in `body` (size read from its header; pixels not yet decoded), or 400."""
    from PIL import Image
    if not body:
        raise BadRequest(400, "empty upload: send the image's bytes as the request body")
    try:
        img = Image.open(io.BytesIO(body), formats=IMAGE_FORMATS)
    except Exception:  # noqa: BLE001  (PIL raises many types for data it cannot read)
        raise BadRequest(400, f"not an image ({', '.join(IMAGE_FORMATS)})") from None
    return img


def pixels(img, mode: str) -> np.ndarray:
    """The image's pixels in mode L or RGB as floats in [0, 1] ((H, W) or (H, W, 3)); transparency over black."""
    from PIL import Image
    try:
        img.load()
        if img.mode in ("RGBA", "LA", "P", "PA"):
            rgba = img.convert("RGBA")
            back = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img = Image.alpha_composite(back, rgba)
        return np.asarray(img.convert(mode), dtype=np.float64) / 255.0
    except BadRequest:
        raise
    except Exception:  # noqa: BLE001
        raise BadRequest(400, "the image could not be decoded (truncated or corrupt)") from None


def centre_drawing(g: np.ndarray, side: int) -> np.ndarray:
    """A drawing (white on black, any size) as the data's digits are: its bounding box scaled so that the longer
    side fills the digit box (20 of 28 pixels, as MNIST; the whole 8 for 8x8 digits), then placed so that its
    centre of mass falls on the image's centre (MNIST's normalisation, LeCun et al. 1998)."""
    from PIL import Image
    on = g > 0.1
    if not on.any():
        raise BadRequest(400, "the drawing is empty")
    rows, cols = np.nonzero(on)
    crop = g[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    box = side if side < 16 else round(side * 20 / 28)
    scale = box / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = Image.fromarray((crop * 255).round().astype(np.uint8), "L").resize((w, h), Image.Resampling.BOX)
    small = np.asarray(small, dtype=np.float64) / 255.0
    mass = small.sum()
    cy = (small.sum(1) * np.arange(h)).sum() / mass if mass > 0 else (h - 1) / 2
    cx = (small.sum(0) * np.arange(w)).sum() / mass if mass > 0 else (w - 1) / 2
    top = int(np.clip(round((side - 1) / 2 - cy), 0, side - h))
    left = int(np.clip(round((side - 1) / 2 - cx), 0, side - w))
    out = np.zeros((side, side))
    out[top: top + h, left: left + w] = small
    return out


# ----- request parameters ----------------------------------------------------------------------------------

class Query:
    """The query string of one request: each parameter given at most once, none that the endpoint does not take."""

    def __init__(self, text: str, allowed: tuple[str, ...]):
        try:
            self.values = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
        except ValueError as e:
            raise BadRequest(400, f"bad query string: {e}") from None
        unknown = sorted(set(self.values) - set(allowed))
        if unknown:
            raise BadRequest(400, f"unknown parameter {unknown[0][:40]!r} (this endpoint takes: "
                                  f"{', '.join(allowed) or 'none'})")
        for k, v in self.values.items():
            if len(v) > 1:
                raise BadRequest(400, f"parameter {k!r} given {len(v)} times")

    def text(self, name: str, default: str | None = None) -> str:
        if name not in self.values:
            if default is None:
                raise BadRequest(400, f"missing parameter {name!r}")
            return default
        return self.values[name][0]

    def number(self, name: str, lo: float, hi: float, default: float | None = None, lo_open: bool = False) -> float:
        raw = self.text(name, None if default is None else repr(default))
        try:
            v = float(raw)
        except ValueError:
            raise BadRequest(400, f"{name} must be a number, got {raw[:40]!r}") from None
        if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
            raise BadRequest(400, f"{name} must be a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}], "
                                  f"got {raw[:40]}")
        return v

    def integer(self, name: str, lo: int, hi: int, default: int | None = None) -> int:
        raw = self.text(name, None if default is None else str(default))
        try:
            v = int(raw)
        except ValueError:
            raise BadRequest(400, f"{name} must be an integer, got {raw[:40]!r}") from None
        if not lo <= v <= hi:
            raise BadRequest(400, f"{name} must be between {lo} and {hi}, got {v}")
        return v

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        v = self.text(name, default)
        if v not in options:
            raise BadRequest(400, f"{name} must be one of {', '.join(options)}, got {v[:40]!r}")
        return v

    def vector(self, name: str, length: int, limit: float) -> torch.Tensor:
        """A latent vector: `length` comma-separated finite numbers, each within ±limit."""
        raw = self.text(name)
        parts = raw.split(",") if raw else []
        if len(parts) != length:
            raise BadRequest(400, f"{name} must have {length} comma-separated values (one per latent dimension), "
                                  f"got {len(parts)}")
        try:
            v = [float(p) for p in parts]
        except ValueError:
            raise BadRequest(400, f"{name} must hold numbers only") from None
        bad = [x for x in v if not math.isfinite(x) or abs(x) > limit]
        if bad:
            raise BadRequest(400, f"{name} values must be finite and within ±{limit:g}, got {bad[0]:g}")
        return torch.tensor(v, dtype=torch.float32)


# ----- the model's side --------------------------------------------------------------------------------------

def head(x, n: int) -> torch.Tensor:
    """The first n examples of a split (in memory or streamed from disk) as a float tensor on the CPU."""
    return torch.as_tensor(x[:min(n, len(x))]).float().cpu()


def family_of(model, splits) -> str:
    """latent, flow or sequence: what the page can show of this model; VgmError for a model it cannot show."""
    from ..flows.models import FlowModel
    from ..models.sequences import SequenceModel
    kind = model.kind
    if isinstance(model, SequenceModel):
        if model.config.likelihood != "categorical":
            raise VgmError(f"the run holds a {kind} model of real-valued sequences; vgm explore shows image models "
                           "and sequence models of text")
        return "sequence"
    shape = tuple(getattr(model.config, "input_shape", ()))
    if len(shape) != 3:
        raise VgmError(f"the run holds a {kind} model of {shape or 'non-image'} data, not an image model; vgm "
                       "explore shows image models (and sequence models of text)")
    if shape[0] not in (1, 3):
        raise VgmError(f"the run's images have {shape[0]} channels; vgm explore shows grey or RGB images")
    if splits.kind != "images" or tuple(splits.shape) != shape:
        raise VgmError(f"the run's data ({splits.kind} {tuple(splits.shape)}) do not match its model {shape}")
    if isinstance(model, FlowModel):
        return "flow"
    if getattr(model, "conditional", False):
        raise VgmError(f"a {kind} model is conditional on a label; vgm explore does not choose labels")
    check_posterior(model, shape)
    return "latent"


def standard_prior(prior) -> bool:
    """True for p(z) = N(0, I), the prior the KL per dimension is measured against."""
    from torch.distributions import Normal
    base = getattr(prior, "base_dist", None)
    return isinstance(base, Normal) and bool((base.loc == 0).all()) and bool((base.scale == 1).all())


def check_posterior(model, shape: tuple[int, ...]) -> None:
    """The sliders, the map and the KL per dimension need q(z|x) to be a diagonal Gaussian over a vector z (or, for
    an autoencoder, a point) and a prior to draw from; VgmError otherwise (e.g. an IAF posterior, VQ codes)."""
    from torch.distributions import Normal
    from ..models.ae import PointMass
    deterministic = bool(getattr(model, "deterministic", False))
    try:
        with torch.no_grad():
            q = model.encode(torch.zeros(1, *shape, device=model.device))
            base = getattr(q, "base_dist", q)
            ok = isinstance(q, PointMass) if deterministic else isinstance(base, Normal)
            ok = ok and q.mean.dim() == 2 and q.stddev.shape == q.mean.shape
            model.decode(q.mean)
            model.prior
    except (NotImplementedError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise VgmError(f"the run holds a model ({model.kind}) whose q(z|x) is not a diagonal Gaussian over one latent "
                       "vector (nor, for an autoencoder, a point) with a prior to draw from: vgm explore cannot "
                       "slide or map it")


def factor_per_dim(codes: np.ndarray, factors: np.ndarray, names: list[str]) -> list[dict | None]:
    """For each code dimension, the factor it tracks best: the largest I(z_j; v_k) / H(v_k) of the MIG matrix
    (codes in 20 equal-width bins, as vgm.metrics.mig); None where every factor is constant."""
    from sklearn.metrics import mutual_info_score
    from ..metrics.mig import discretize, mutual_info_matrix
    mi = mutual_info_matrix(discretize(codes), factors)                          # (d, K), nats
    entropy = np.array([mutual_info_score(f, f) for f in factors.T])
    norm = np.where(entropy > 0, mi / np.where(entropy > 0, entropy, 1), -np.inf)
    best = norm.argmax(1)
    return [{"factor": names[k], "nmi": float(norm[j, k])} if np.isfinite(norm[j, k]) else None
            for j, k in enumerate(best)]


class Explorer:
    """A loaded run and what its page needs, computed once; the methods answer the page's requests."""

    def __init__(self, model, splits, run_dir: Path, seed: int = 0, data_name: str = ""):
        self.model, self.run_dir, self.seed = model.eval(), Path(run_dir), seed
        self.lock = threading.Lock()             # every use of the model and of torch's random state
        self.tsne_lock = threading.Lock()
        self.tsne: np.ndarray | None = None
        self.draws = 0
        self.family = family_of(model, splits)
        self.data_name = data_name
        self.binarize = splits.binarize
        c = model.config
        self.levels = int(getattr(c, "levels", 0) or splits.meta.get("levels", 0) or 0)
        if self.family == "sequence":
            self.setup_sequences(splits)
            return
        self.shape = tuple(c.input_shape)
        if self.family == "latent":
            self.setup_latent(splits)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def next_seed(self) -> int:
        """A fresh seed for one random request (reported back, so that the draw can be repeated)."""
        self.draws += 1
        return derived_seed(self.seed, f"explore:{self.draws}")

    # -- set-up ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_means(self, x: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior means and standard deviations (N, d) of x, on the CPU."""
        mus, sds = [], []
        for i in range(0, len(x), batch):
            q = self.model.encode(x[i:i + batch].to(self.device))
            mus.append(q.mean.float().cpu())
            sds.append(q.stddev.float().cpu())
        return torch.cat(mus), torch.cat(sds)

    def setup_latent(self, splits) -> None:
        self.deterministic = bool(getattr(self.model, "deterministic", False))
        self.test = head(splits.test, MAP_POINTS)
        if len(self.test) < 2:
            raise VgmError("the run's test split has fewer than 2 examples: nothing to map")
        mu, sd = self.encode_means(self.test)
        self.mu = mu
        self.d = mu.shape[1]
        if self.deterministic:
            self.kl = None
            self.order = list(range(self.d))
        else:
            self.kl = (0.5 * (mu.double().square() + sd.double().square() - 1) - sd.double().log()).mean(0).numpy()
            self.order = [int(j) for j in np.argsort(-self.kl, kind="stable")]
        top = float(mu.abs().max())
        self.range = float(max(3.0, math.ceil(1.05 * top)))      # every slider spans [-range, range]
        self.z_limit = 10 * self.range                          # beyond this a z is refused as absurd
        pool = head(splits.train, NEAREST_POOL)
        if splits.binarize == "dynamic":                        # the model was trained on binary draws
            pool = torch.bernoulli(pool, generator=torch.Generator().manual_seed(0))
        self.pool = pool
        self.pool_mu = self.encode_means(pool)[0]
        self.pool_labels = self.labels_of(splits.train_labels, len(pool))
        self.labels = self.labels_of(splits.test_labels, len(self.test))
        self.label_names = list(splits.meta.get("factor_names", ())) or (["label"] if self.labels is not None else [])
        self.map_setup()
        self.factor_of_dim = None
        if self.labels is not None and np.ndim(self.labels) == 2 and self.label_names:
            self.factor_of_dim = factor_per_dim(mu.double().numpy(), np.asarray(self.labels), self.label_names)
        self.traversal = self.model.kind in ("betavae", "tcvae")
        self.note = self.likelihood_note()
        if not self.deterministic and not standard_prior(self.model.prior):
            self.note = (self.note + "; " if self.note else "") + (
                "the prior is not N(0, I): the KL per dimension is to N(0, 1); the ELBO's KL is the model's own, "
                f"estimated from the {ELBO_SAMPLES} draws where it has no closed form")

    @staticmethod
    def labels_of(labels, n: int):
        if labels is None:
            return None
        v = torch.as_tensor(labels[:n]).cpu()
        if v.dtype.is_floating_point or v.dim() not in (1, 2):
            return None
        return v.tolist()

    def map_setup(self) -> None:
        """The 2-D map: the latent itself when d ≤ 2 (padded with 0 when d = 1), else PCA of the means."""
        mu = self.mu.double().numpy()
        if self.d <= 2:
            self.pca = None
            self.map_points = np.pad(mu, ((0, 0), (0, 2 - self.d)))
            return
        centre = mu.mean(0)
        _, s, vt = np.linalg.svd(mu - centre, full_matrices=False)
        comps = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(1)])[:, None]   # fixed signs
        self.pca = (centre, comps, (s[:2] ** 2 / max((s ** 2).sum(), 1e-300)))
        self.map_points = (mu - centre) @ comps.T

    def likelihood_note(self) -> str:
        from torch.distributions import Bernoulli
        if self.deterministic:
            return "an autoencoder has no ELBO: only its reconstruction is shown"
        with torch.no_grad():
            px = self.model.decode(self.mu[:1].to(self.device))
        base = getattr(px, "base_dist", px)
        if isinstance(base, Bernoulli) and self.binarize == "none" and self.levels != 2:
            return ("Bernoulli likelihood on grey levels: the ELBO's reconstruction term is a cross-entropy, not a "
                    "log-likelihood of the image")
        return ""

    def setup_sequences(self, splits) -> None:
        from ..data.tokens import to_text
        c = self.model.config
        self.alphabet = c.alphabet
        self.examples = to_text(torch.as_tensor(splits.test[:20]).cpu(), c.alphabet) if len(splits.test) else []

    # -- answers ----------------------------------------------------------------------------------------------

    def info(self) -> dict:
        out = {"run": self.run_dir.name or str(self.run_dir), "kind": self.model.kind, "family": self.family,
               "data": self.data_name, "limits": {"samples": MAX_SAMPLES, "steps": MAX_STEPS,
                                                  "temperature": MAX_TEMPERATURE, "body_bytes": MAX_BODY,
                                                  "traversal_steps": MAX_TRAVERSAL_STEPS}}
        if self.family == "sequence":
            return {**out, "alphabet": self.alphabet, "examples": self.examples,
                    "can_interpolate": callable(getattr(self.model, "interpolate", None)), "max_text": MAX_TEXT}
        out.update(shape=list(self.shape), levels=self.levels, binarize=self.binarize,
                   can_draw=self.shape[0] == 1 and self.shape[1] == self.shape[2] and self.shape[1] in (8, 28))
        if self.family == "flow":
            return out
        dims = [{"dim": j, "kl": None if self.kl is None else float(self.kl[j]),
                 "active": None if self.kl is None else bool(self.kl[j] >= KL_ACTIVE),
                 "factor": None if self.factor_of_dim is None else self.factor_of_dim[j]} for j in self.order]
        out.update(latent_dim=self.d, dims=dims, kl_active=KL_ACTIVE, range=self.range, z_limit=self.z_limit,
                   deterministic=self.deterministic, map_size=len(self.test), labels=self.labels is not None,
                   label_names=self.label_names, traversal=self.traversal, note=self.note,
                   map_methods=["latent"] if self.pca is None else ["pca", "tsne"])
        return out

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) for z (N, d), on the CPU (callers hold the lock)."""
        return self.model.decode(z.to(self.device)).mean.float().cpu()

    def decode_png(self, z: torch.Tensor) -> bytes:
        with self.lock:
            x = self.decode_mean(z[None])[0]
        return png(x)

    @torch.no_grad()
    def prior_sample(self, temperature: float) -> dict:
        """z ~ p(z) at a temperature T, as the model's own sample() draws it: z = μ + T·(z₀ − μ) with z₀ ~ p(z)
        for a Gaussian prior; z = f⁻¹(T·ε), ε ~ N(0, I), for a flow prior."""
        with self.lock:
            seed = self.next_seed()
            torch.manual_seed(seed)
            flow = getattr(self.model, "prior_flow", None)
            if flow is not None:
                z = flow.inverse(temperature * flow.base.sample((1,)))[0][0]
            else:
                prior = self.model.prior
                z = prior.mean + temperature * (prior.sample() - prior.mean)
        return {"z": z.cpu().tolist(), "seed": seed}

    @torch.no_grad()
    def elbo_terms(self, x: torch.Tensor) -> list[dict]:
        """Per image of x (N, C, H, W): elbo = −(recon + kl) in nats, recon averaged over ELBO_SAMPLES draws
        z ~ q(z|x) (a fixed seed: the same image always gets the same number), kl in closed form (under a flow
        prior, which has none, log q(z|x) − log p(z) averaged over the same draws, as vgm.elbo). A dequantized
        model is scored as `vgm evaluate` scores it (fixed noise, on the discrete scale). Callers hold the lock."""
        from ..data.dequantize import dequantize, eval_noise, log_scale
        from ..elbo import elbo
        if self.deterministic:
            return [{"elbo": None, "recon": None, "kl": None} for _ in range(len(x))]
        x = x.to(self.device)
        shift = 0.0
        if getattr(self.model.config, "dequantize", False):
            x = dequantize(x, self.levels, eval_noise(x))
            shift = log_scale(self.levels, x[0].numel())
        torch.manual_seed(derived_seed(self.seed, "explore:elbo"))
        n = len(x)
        t = elbo(self.model, x.repeat(ELBO_SAMPLES, *([1] * (x.dim() - 1))))       # (S·N,) one draw each
        recon = t["recon"].reshape(ELBO_SAMPLES, n).double().mean(0).cpu() - shift
        kl = t["kl"].reshape(ELBO_SAMPLES, n).double().mean(0).cpu()     # closed form, or (flow prior) estimated
        return [{"elbo": -(r + k), "recon": r, "kl": k} for r, k in zip(recon.tolist(), kl.tolist())]

    def point(self, i: int) -> dict:
        self.check_index(i)
        label = None if self.labels is None else self.labels[i]
        return {"index": i, "z": self.mu[i].tolist(), "label": label, "xy": self.map_points[i].tolist()}

    def check_index(self, i: int) -> None:
        if not 0 <= i < len(self.test):
            raise BadRequest(400, f"test example index must be between 0 and {len(self.test) - 1}, got {i}")

    def example_png(self, i: int) -> bytes:
        self.check_index(i)
        return png(self.test[i])

    def map(self, method: str) -> dict:
        if method == "tsne":
            if self.pca is None:
                raise BadRequest(400, "the latent space is already 2-D: the map is the latent itself")
            points, invertible = self.tsne_points(), False
        elif method == "pca" or method == "latent":
            if (method == "pca") != (self.pca is not None):
                raise BadRequest(400, f"this model's map is {'pca' if self.pca is not None else 'latent'}")
            points, invertible = self.map_points, True
        out = {"method": method, "points": np.round(points, 5).tolist(), "invertible": invertible,
               "labels": self.labels, "label_names": self.label_names}
        if method == "pca":
            out["explained"] = self.pca[2].tolist()
        return out

    def tsne_points(self) -> np.ndarray:
        """t-SNE of the posterior means (computed once, on request; the model lock is not held meanwhile)."""
        with self.tsne_lock:
            if self.tsne is None:
                from sklearn.manifold import TSNE
                n = len(self.mu)
                self.tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                                 random_state=self.seed % 2 ** 32).fit_transform(self.mu.double().numpy())
            return self.tsne

    def unmap(self, x: float, y: float) -> dict:
        """z of a place on the map: the PCA inverse centre + (x, y) · components (the latent itself when d ≤ 2)."""
        xy = np.array([x, y])
        z = xy[:self.d] if self.pca is None else self.pca[0] + xy @ self.pca[1]
        if np.abs(z).max() > self.z_limit:
            raise BadRequest(400, f"that place maps to a z beyond ±{self.z_limit:g}")
        return {"z": z.tolist()}

    def interpolate(self, i: int, j: int, steps: int) -> dict:
        """Decoded means along the line and the spherical path between the posterior means of test examples i, j,
        each with its ELBO (as an image scored by the model)."""
        self.check_index(i)
        self.check_index(j)
        from .interpolate import lerp, slerp
        a, b = self.mu[i].double(), self.mu[j].double()
        t = torch.linspace(0, 1, steps, dtype=torch.float64)
        paths = {"linear": lerp(a, b, t), "spherical": slerp(a, b, t)}
        with self.lock:
            decoded = {name: self.decode_mean(z.float()) for name, z in paths.items()}
            scores = {name: self.elbo_terms(x) for name, x in decoded.items()}
        out: dict = {"i": i, "j": j, "t": t.tolist(), "ends": [data_url(self.test[i]), data_url(self.test[j])]}
        for name, z in paths.items():
            out[name] = [{"z": zk.tolist(), "image": data_url(xk), **sk}
                         for zk, xk, sk in zip(z, decoded[name], scores[name])]
        return out

    def traversal_rows(self, z: torch.Tensor, steps: int, span: float) -> dict:
        """For each dimension (in slider order): z with that dimension swept over linspace(−span, span), decoded,
        as one strip; with the dimension's KL and (dSprites) the factor it tracks best."""
        if not self.traversal:
            raise BadRequest(404, f"traversal grids are shown for betavae and tcvae runs, not {self.model.kind}")
        values = torch.linspace(-span, span, steps)
        zs = z.repeat(self.d, steps, 1)
        zs[torch.arange(self.d), :, torch.arange(self.d)] = values
        with self.lock:
            imgs = self.decode_mean(zs.reshape(-1, self.d)).reshape(self.d, steps, *self.shape)
        rows = [{"dim": j, "kl": None if self.kl is None else float(self.kl[j]),
                 "factor": None if self.factor_of_dim is None else self.factor_of_dim[j],
                 "image": data_url(strip(imgs[j]))} for j in self.order]
        return {"values": values.tolist(), "rows": rows}

    def read_image(self, body: bytes, drawn: bool) -> torch.Tensor:
        """An uploaded (exactly the model's size) or drawn (any size up to MAX_DRAWN_SIDE, rescaled) image as the
        model's data are: grey levels quantized to the data's levels, binarized (at 0.5) for a binarized run."""
        c, h, w = self.shape
        img = open_image(body)
        if drawn:
            if c != 1 or h != w or h not in (8, 28):
                raise BadRequest(400, f"drawing is for models of 28x28 or 8x8 grey images; this one takes {c}x{h}x{w}")
            if max(img.size) > MAX_DRAWN_SIDE:
                raise BadRequest(400, f"a drawing may be at most {MAX_DRAWN_SIDE} pixels wide and high, got "
                                      f"{img.size[0]}x{img.size[1]}")
            arr = centre_drawing(pixels(img, "L"), h)[None]
        else:
            if img.size != (w, h):
                raise BadRequest(400, f"the image is {img.size[0]}x{img.size[1]} pixels; this model takes {w}x{h} "
                                      "(draw on the canvas to have an image rescaled)")
            p = pixels(img, "L" if c == 1 else "RGB")
            arr = p[None] if c == 1 else p.transpose(2, 0, 1)
        x = torch.tensor(arr, dtype=torch.float32)
        if self.binarize != "none" or self.levels == 2:
            return (x >= 0.5).float()
        if self.levels:
            from ..data.dequantize import grey_levels
            return grey_levels(x, self.levels) / (self.levels - 1)
        return x

    def encode_image(self, body: bytes, drawn: bool) -> dict:
        x = self.read_image(body, drawn)
        if self.family == "flow":
            return self.flow_density(x)
        with self.lock, torch.no_grad():
            q = self.model.encode(x[None].to(self.device))
            mu, sd = q.mean[0].float().cpu(), q.stddev[0].float().cpu()
            recon = self.decode_mean(mu[None])[0]
            score = self.elbo_terms(x[None])[0]
        kl_dims = None if self.deterministic else \
            (0.5 * (mu.double().square() + sd.double().square() - 1) - sd.double().log()).tolist()
        dist = (self.pool_mu - mu).square().sum(1).sqrt()
        near = torch.topk(dist, min(NEAREST_K, len(dist)), largest=False)
        nearest = [{"index": int(k), "distance": float(v), "image": data_url(self.pool[k]),
                    "label": None if self.pool_labels is None else self.pool_labels[k]}
                   for v, k in zip(near.values.tolist(), near.indices.tolist())]
        return {"input": data_url(x), "reconstruction": data_url(recon), "mu": mu.tolist(), "sigma": sd.tolist(),
                "kl_per_dim": kl_dims, **score, "nearest": nearest}

    @torch.no_grad()
    def flow_density(self, x: torch.Tensor) -> dict:
        """Exact log p(x) (nats; on the discrete scale, with vgm's fixed evaluation noise, for grey levels) and
        bits/dim = −log p(x) / (D ln 2) where x is discrete."""
        from ..data.dequantize import bits_per_dim, eval_noise
        xb = x[None].to(self.device)
        with self.lock:
            noise = eval_noise(xb) if self.levels else None
            lp = float(self.model.log_prob(xb, noise)[0])
        return {"input": data_url(x), "log_px": lp,
                "bits_per_dim": bits_per_dim(lp, x.numel()) if self.levels else None}

    def flow_samples(self, n: int, temperature: float) -> dict:
        with self.lock:
            seed = self.next_seed()
            torch.manual_seed(seed)
            x = self.model.sample(n, temperature=temperature).float().cpu()
        return {"seed": seed, "temperature": temperature, "images": [data_url(xi) for xi in x]}

    def seq_sample(self, n: int) -> dict:
        from ..data.tokens import to_text
        with self.lock:
            seed = self.next_seed()
            torch.manual_seed(seed)
            tokens = self.model.sample(n).cpu()
        return {"seed": seed, "lines": to_text(tokens, self.alphabet)}

    def seq_text(self, text: str, name: str) -> torch.Tensor:
        from ..data.tokens import encode_known
        if not text:
            raise BadRequest(400, f"{name} is empty")
        if len(text) > MAX_TEXT:
            raise BadRequest(400, f"{name} is longer than {MAX_TEXT} characters")
        try:
            return encode_known(text, self.alphabet)[0]
        except ValueError as e:
            raise BadRequest(400, f"{name}: {e}") from None

    def seq_interpolate(self, a: str, b: str, steps: int) -> dict:
        from ..data.tokens import to_text
        if not callable(getattr(self.model, "interpolate", None)):
            raise BadRequest(404, f"a {self.model.kind} model has no single latent code per sequence to interpolate")
        ta, tb = self.seq_text(a, "a"), self.seq_text(b, "b")
        with self.lock:
            path = self.model.interpolate(ta.to(self.device), tb.to(self.device), steps).cpu()
        return {"lines": to_text(path, self.alphabet)}


# ----- HTTP --------------------------------------------------------------------------------------------------

@dataclass
class Reply:
    body: bytes
    ctype: str = "application/json"
    status: int = 200
    cache: bool = False


def as_json(obj) -> Reply:
    return Reply(json.dumps(obj, allow_nan=False).encode())


def flag(q: Query, name: str) -> bool:
    return q.choice(name, ("0", "1"), "0") == "1"


def index(q: Query, name: str) -> int:
    return q.integer(name, -2 ** 31, 2 ** 31)


@dataclass
class Route:
    method: str
    families: tuple[str, ...]           # the models the endpoint is for
    params: tuple[str, ...]
    answer: Callable[[Explorer, Query, bytes | None], Reply]


LATENT, FLOW, TEXT = ("latent",), ("flow",), ("sequence",)
ANY = ("latent", "flow", "sequence")
ROUTES: dict[str, Route] = {
    "/api/info": Route("GET", ANY, (), lambda e, q, b: as_json(e.info())),
    "/api/decode": Route("GET", LATENT, ("z",), lambda e, q, b: Reply(e.decode_png(q.vector("z", e.d, e.z_limit)),
                                                                      "image/png")),
    "/api/prior": Route("GET", LATENT, ("t",), lambda e, q, b: as_json(e.prior_sample(
        q.number("t", 0.0, MAX_TEMPERATURE, 1.0, lo_open=True)))),
    "/api/map": Route("GET", LATENT, ("method",), lambda e, q, b: as_json(e.map(
        q.choice("method", ("latent", "pca", "tsne"), "latent" if e.pca is None else "pca")))),
    "/api/point": Route("GET", LATENT, ("i",), lambda e, q, b: as_json(e.point(index(q, "i")))),
    "/api/example.png": Route("GET", LATENT, ("i",), lambda e, q, b: Reply(e.example_png(index(q, "i")),
                                                                           "image/png", cache=True)),
    "/api/unmap": Route("GET", LATENT, ("x", "y"), lambda e, q, b: as_json(e.unmap(
        q.number("x", -1e6, 1e6), q.number("y", -1e6, 1e6)))),
    "/api/interpolate": Route("GET", LATENT, ("i", "j", "steps"), lambda e, q, b: as_json(e.interpolate(
        index(q, "i"), index(q, "j"), q.integer("steps", 2, MAX_STEPS, 10)))),
    "/api/traversal": Route("GET", LATENT, ("z", "steps", "span"), lambda e, q, b: as_json(e.traversal_rows(
        q.vector("z", e.d, e.z_limit), q.integer("steps", 2, MAX_TRAVERSAL_STEPS, 9),
        q.number("span", 0.0, e.z_limit, 3.0, lo_open=True)))),
    "/api/encode": Route("POST", LATENT + FLOW, ("drawn",), lambda e, q, b: as_json(
        e.encode_image(b, flag(q, "drawn")))),
    "/api/samples": Route("GET", FLOW, ("n", "t"), lambda e, q, b: as_json(e.flow_samples(
        q.integer("n", 1, MAX_SAMPLES, 16), q.number("t", 0.0, MAX_TEMPERATURE, 1.0, lo_open=True)))),
    "/api/text/sample": Route("GET", TEXT, ("n",), lambda e, q, b: as_json(e.seq_sample(
        q.integer("n", 1, MAX_SAMPLES, 10)))),
    "/api/text/interpolate": Route("GET", TEXT, ("a", "b", "steps"), lambda e, q, b: as_json(e.seq_interpolate(
        q.text("a"), q.text("b"), q.integer("steps", 2, MAX_STEPS, 8)))),
}


class Handler(BaseHTTPRequestHandler):
    """Exact paths only: the three assets and the ROUTES; nothing else is looked up anywhere."""

    server_version = "vgm-explore"
    protocol_version = "HTTP/1.1"
    timeout = 60                    # an idle kept-alive connection gives its thread back after a minute
    disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms wait for a delayed ACK ...
    wbufsize = 1 << 16              # ... in one write (the buffer is flushed after each request)

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def log_message(self, fmt: str, *args) -> None:   # no line per request on the user's terminal
        pass

    def dispatch(self, method: str) -> None:
        t0 = time.perf_counter()
        server: ExploreServer = self.server             # type: ignore[assignment]
        self.body_read = False
        try:
            self.check_host(server)
            parts = urlsplit(self.path)
            if parts.path in ASSETS and method == "GET":
                if parts.query:
                    raise BadRequest(400, "the page's files take no parameters")
                reply = server.assets[parts.path]
            else:
                route = ROUTES.get(parts.path)
                if route is None:
                    raise BadRequest(404, "not found")
                if method != route.method:
                    raise BadRequest(405, f"{parts.path} takes {route.method} requests, not {method}")
                explorer = server.explorer
                if explorer.family not in route.families:
                    raise BadRequest(404, f"this run holds a {explorer.model.kind} model ({explorer.family}); "
                                          f"{parts.path} is for {' or '.join(route.families)} models")
                q = Query(parts.query, route.params)
                body = self.read_body() if method == "POST" else None
                reply = route.answer(explorer, q, body)
        except BadRequest as e:
            reply = Reply(json.dumps({"error": str(e)}).encode(), status=e.status)
        except VgmError as e:
            reply = Reply(json.dumps({"error": str(e)}).encode(), status=400)
        except Exception as e:  # noqa: BLE001  (a bug must not take the server down; the user sees one line)
            print(f"vgm explore: internal error on {self.path[:80]}: {type(e).__name__}: {e}", file=sys.stderr)
            reply = Reply(json.dumps({"error": f"internal error ({type(e).__name__})"}).encode(), status=500)
        self.send(reply, time.perf_counter() - t0)

    def check_host(self, server: "ExploreServer") -> None:
        """On a loopback address, only requests addressed to it (a DNS-rebinding page elsewhere sends its own Host)."""
        host = self.headers.get("Host")
        if server.loopback and host is not None and host not in server.hosts:
            self.close_connection = True
            raise BadRequest(403, "requests must be addressed to this server's own loopback address")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise BadRequest(411, "send the image with a Content-Length (no chunked transfer)")
        raw = self.headers.get("Content-Length")
        try:
            n = int(raw)
        except (TypeError, ValueError):
            self.close_connection = True
            raise BadRequest(411, "a Content-Length is needed") from None
        if n < 0:
            self.close_connection = True
            raise BadRequest(400, "negative Content-Length")
        if n > MAX_BODY:
            self.close_connection = True
            if n <= 4 * MAX_BODY:                   # read it, so that the client sees the answer, not a reset
                left = n
                while left > 0:
                    got = self.rfile.read(min(left, 65536))
                    if not got:
                        break
                    left -= len(got)
            raise BadRequest(413, f"the upload is {n} bytes; at most {MAX_BODY} are accepted")
        body = self.rfile.read(n)
        if len(body) != n:
            self.close_connection = True
            raise BadRequest(400, "the body is shorter than its Content-Length")
        self.body_read = True
        return body

    def send(self, reply: Reply, seconds: float) -> None:
        if not self.body_read and (self.headers.get("Content-Length", "0").strip() not in ("", "0")
                                   or self.headers.get("Transfer-Encoding")):
            self.close_connection = True            # an unread body must not be taken for the next request
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.ctype)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "private, max-age=3600" if reply.cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Server-Timing", f"app;dur={seconds * 1000:.3f}")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)


class ExploreServer(ThreadingHTTPServer):
    """A thread per connection. Closing shuts every open connection down and joins the threads, so Ctrl-C never
    waits for a browser's kept-alive connection, and no handler thread is still running torch when the interpreter
    exits (one that was aborted the process in about 1 of 10 Ctrl-Cs: "terminate called without an active
    exception")."""

    daemon_threads = False          # so that server_close joins them (ThreadingMixIn's block_on_close)
    request_queue_size = 256        # a burst of connections waits in the backlog instead of being refused

    def __init__(self, explorer: Explorer, host: str, port: int):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), Handler)
        self.explorer = explorer
        self.loopback = host in LOOPBACK
        self.port = self.server_address[1]
        self.hosts = {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        folder = resources.files("vgm.tools") / "explore_assets"
        self.assets = {path: Reply(folder.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in ASSETS.items()}

    def process_request(self, request, client_address) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)         # a handler waiting for the next request reads EOF
                except OSError:
                    pass
        super().server_close()                              # and joins the handler threads

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"


def start(explorer: Explorer, host: str = "127.0.0.1", port: int = 0) -> tuple[ExploreServer, threading.Thread]:
    """A server on (host, port) answering from a background thread (tests, benchmarks); stop it with
    server.shutdown(); server.server_close()."""
    server = ExploreServer(explorer, host, port)
    thread = threading.Thread(target=server.serve_forever, name="vgm-explore", daemon=True)
    thread.start()
    return server, thread


def open_run(run_dir: Path, data_dir: str | None = None, device: str = "auto", seed: int = 0) -> Explorer:
    """Load a run folder's model (once) and data into an Explorer; VgmError when missing, corrupt or unshowable."""
    from ..checkpoint import load
    from ..run import run_data
    from ..train import resolve_device
    run_dir = Path(run_dir)
    cfg, splits = run_data(run_dir, data_dir)
    model = load(run_dir, resolve_device(device))
    if model.kind != cfg["kind"]:
        raise VgmError(f"{run_dir}: config.json names a {cfg['kind']!r} run but model.json a {model.kind!r} model")
    torch.manual_seed(seed)
    return Explorer(model, splits, run_dir, seed, data_name=cfg["data"]["data"])


def port_number(text: str) -> int:
    import argparse
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535 (0: any free port), got {v}")
    return v


@register_command("explore")
def cmd_explore(argv: list[str]) -> int:
    from ..options import Parser, seed
    p = Parser(prog="vgm explore", description="serve a local page to explore a trained run: latent sliders, the "
                                               "latent map, interpolation, draw or upload an image, traversals, "
                                               "flow samples, text samples")
    p.add_argument("run_dir", type=Path, help="run folder (of an image model, or a sequence model of text)")
    p.add_argument("--port", type=port_number, default=8765, help="port to listen on (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but the loopback address "
                                                       "lets other machines use the page")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--data-dir", default=None, help="where the run's data now are, if moved")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=seed, default=0, help="seed of the samples drawn and the ELBO estimates")
    a = p.parse_args(argv)
    explorer = open_run(a.run_dir, a.data_dir, a.device, a.seed)
    try:
        server = ExploreServer(explorer, a.host, a.port)
    except OSError as e:
        raise VgmError(f"cannot listen on {a.host}:{a.port}: {e.strerror or e}") from None
    if not server.loopback:
        print(f"vgm explore: warning: listening on {a.host}, not on 127.0.0.1: anyone who can reach this machine "
              "can use the page and see the run's data", file=sys.stderr)
    print(f"vgm explore: {a.run_dir} ({explorer.model.kind}) at {server.url}  (Ctrl-C stops)", flush=True)
    if a.open:
        import webbrowser
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("vgm explore: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
