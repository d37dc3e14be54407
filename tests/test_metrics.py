"""Disentanglement metrics: closed forms, ground-truth factors as codes (≈ the most the metric allows),
rotated factors (a known lower value), independent noise (≈ 0 or chance), and invariance.

Invariance to permuting the codes and rescaling each by a positive constant (plus a shift), as each metric is
defined:
  MIG      exactly: equal-width bins over each code's own range do not move under a positive affine map;
  SAP      exactly: the codes are standardised before the one-code classifiers;
  DCI      in exact arithmetic (trees split on order, not scale), but a tree breaks ties between equally good
           features by their order, so a permutation moves the scores slightly (< 0.02);
  β-VAE    in exact arithmetic (the |differences| are standardised); rounding may move a point on the boundary;
  FactorVAE exactly, as long as pruning keeps the same dimensions: its pruning threshold is on the raw
           standard deviation (as in disentanglement_lib), so a code scaled small enough is pruned: not invariant.
Rotations mix factors across codes: none of the metrics is meant to be invariant to them.
"""
from __future__ import annotations

import io
import json
import re
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vgm import VgmError
from vgm import load as vgm_load
from vgm.cli import main
from vgm.data.dsprites import DSprites
from vgm.flows.models import RealNVP
from vgm.metrics import beta_vae_score, dci, factor_vae_score, mig, sap
from vgm.models.ae import AE
from vgm.models.betavae import BetaVAE
from vgm.registry import MODELS
from vgm.tools.metrics import KL_ACTIVE, encoder_of, gaussian, kl_of, score_all, stages
from vgm.tools.traversal import kl_per_dim

dci_module = sys.modules["vgm.metrics.dci"]
mig_module = sys.modules["vgm.metrics.mig"]
SIZES = (3, 6, 40, 32, 32)


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, s, 4000) for s in SIZES], 1)


def permute_and_rescale(codes: np.ndarray) -> np.ndarray:
    """Codes in another order, each times a positive constant (0.0067 to 148) and shifted."""
    perm = np.random.default_rng(5).permutation(codes.shape[1])
    assert (perm != np.arange(codes.shape[1])).any()
    return codes[:, perm] * np.exp(np.linspace(-5, 5, codes.shape[1])) + 11.0


def rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


ENTANGLE = np.random.default_rng(8).normal(size=(5, 5))     # a code that is not disentangled: z = v W


class FactorGrid:
    """A factor dataset whose 'images' are the factor values themselves: identity encoding = ground truth."""
    factor_sizes = SIZES

    def sample_factors(self, n, rng):
        return np.stack([rng.integers(0, s, n) for s in SIZES], 1)

    def images(self, f):
        return np.asarray(f, dtype=np.float64)


def test_mig_closed_form():
    rng = np.random.default_rng(1)
    v = rng.integers(0, 2, (5000, 2))                        # two fair coins
    codes = np.c_[v[:, 0], rng.normal(size=5000), v[:, 1] * 2.0]
    # each coin sits in one code: I = H = log 2 there, ≈ 0 elsewhere -> gap ≈ 1
    assert mig(codes, v) == pytest.approx(1.0, abs=0.01)
    both = np.c_[v[:, 0], v[:, 0], v[:, 1]]                 # coin 0 in two codes: its gap is 0
    assert mig(both, v) == pytest.approx(0.5, abs=0.01)
    # rotated by 45°: each code is (v0 ± v1)/√2 and holds log(2)/2 about each coin, the same in both -> gap 0
    assert mig(v @ rotation(np.pi / 4).T, v) == pytest.approx(0.0, abs=0.02)


def test_mig_ground_truth_noise_and_invariance(factors):
    z = factors.astype(float)
    top = mig(z, factors)
    # the most 20 bins allow: I(bin(v); v) / H(v) per factor (1 for ≤ 20 values), averaged
    disc = mig_module.discretize(z, 20)
    from sklearn.metrics import mutual_info_score
    bound = np.mean([mutual_info_score(disc[:, k], factors[:, k]) / mutual_info_score(factors[:, k], factors[:, k])
                     for k in range(5)])
    assert 0.85 < top < 0.93 and top == pytest.approx(bound, abs=0.02)
    assert mig(permute_and_rescale(z), factors) == pytest.approx(top, abs=1e-12)
    mixed = z @ ENTANGLE
    assert mig(permute_and_rescale(mixed), factors) == pytest.approx(mig(mixed, factors), abs=1e-12)
    assert mig(np.random.default_rng(2).normal(size=(4000, 10)), factors) < 0.02


def test_dci_closed_form_purity():
    assert dci_module.weighted_purity(np.eye(4)) == pytest.approx(1.0)
    assert dci_module.weighted_purity(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)
    # one code split evenly over 2 of 4 factors: 1 − log 2 / log 4 = 0.5
    assert dci_module.weighted_purity(np.array([[1.0, 1.0, 0, 0]])) == pytest.approx(0.5)


def test_dci_ground_truth_noise_and_invariance(factors):
    f = factors[:1000]
    z = f.astype(float)
    gt = dci(z, f, model="forest")
    assert gt["disentanglement"] > 0.97 and gt["completeness"] > 0.97 and gt["informativeness"] > 0.9
    moved = dci(permute_and_rescale(z), f, model="forest")
    for k in ("disentanglement", "completeness", "informativeness"):
        assert moved[k] == pytest.approx(gt[k], abs=0.02)
    noise = dci(np.random.default_rng(3).normal(size=(1000, 10)), f, model="forest")
    assert noise["disentanglement"] < 0.1 and noise["informativeness"] < 0.4


def test_dci_gradient_boosting_on_ground_truth(factors):
    f = factors[:600, :2]                                   # shape and scale: 3 and 6 classes, quick to boost
    z = np.c_[f.astype(float), np.random.default_rng(4).normal(size=(600, 2))]
    res = dci(z, f, model="gbt")
    assert res["disentanglement"] > 0.9 and res["informativeness"] > 0.95
    with pytest.raises(VgmError, match="importance model"):
        dci(z, f, model="lasso")


def test_sap_ground_truth_noise_and_invariance(factors):
    f = factors[:2000]
    z = f.astype(float)
    assert sap(z, f, continuous=True) > 0.97                 # R² of each factor from its own code is 1
    gt = sap(z, f)
    noise = sap(np.random.default_rng(6).normal(size=(2000, 10)), f)
    assert noise < 0.03 and gt > noise + 0.15
    assert sap(permute_and_rescale(z), f) == pytest.approx(gt, abs=1e-12)
    mixed = z @ ENTANGLE
    assert sap(permute_and_rescale(mixed), f) == pytest.approx(sap(mixed, f), abs=1e-12)


def test_sampling_scores_on_ground_truth_and_noise():
    grid, n = FactorGrid(), dict(n_train=300, n_eval=200, batch_size=32)
    identity = lambda x: x
    assert beta_vae_score(identity, grid, **n)["eval_accuracy"] == 1.0
    fv = factor_vae_score(identity, grid, n_variance=2000, **n)
    assert fv["eval_accuracy"] == 1.0 and fv["active_dims"] == 5
    rng = np.random.default_rng(7)
    noise = lambda x: rng.normal(size=(len(x), 8))
    assert beta_vae_score(noise, grid, **n)["eval_accuracy"] < 0.35          # chance: 0.2
    assert factor_vae_score(noise, grid, n_variance=2000, **n)["eval_accuracy"] < 0.35


def test_sampling_scores_are_invariant_to_permuting_and_rescaling():
    grid, n = FactorGrid(), dict(n_train=200, n_eval=100, batch_size=16)
    mixed = lambda x: x @ ENTANGLE
    moved = lambda x: permute_and_rescale(x @ ENTANGLE)
    a = factor_vae_score(mixed, grid, n_variance=1000, prune=0.0, **n)
    assert a == factor_vae_score(moved, grid, n_variance=1000, prune=0.0, **n) and a["eval_accuracy"] < 1.0
    b = beta_vae_score(mixed, grid, **n)["eval_accuracy"]
    assert b < 1.0 and beta_vae_score(moved, grid, **n)["eval_accuracy"] == pytest.approx(b, abs=1 / 100 + 1e-9)
    # FactorVAE prunes on the raw standard deviation over the data (>= 0.05): 0.06 is kept, 0.04 is not
    sd_position = np.sqrt((32 ** 2 - 1) / 12)               # of a uniform index 0..31
    small = lambda x: x * np.r_[1, 1, 1, 0.06 / sd_position, 0.04 / sd_position]
    assert factor_vae_score(small, grid, n_variance=1000, **n)["active_dims"] == 4


def test_rotated_factors_known_scores():
    """SAP with R²: codes rotated by θ predict each factor with R² cos²θ and sin²θ, so SAP = |cos 2θ|;
    DCI: at 45° both codes matter equally to both factors, so D = C = 1 − H₂(½, ½) = 0."""
    rng = np.random.default_rng(11)
    f = rng.integers(0, 100, (2000, 2))                     # two independent factors of equal variance
    for theta in (0.0, np.pi / 6, np.pi / 4):
        assert sap((f - 49.5) @ rotation(theta).T, f, continuous=True) == pytest.approx(
            abs(np.cos(2 * theta)), abs=0.03)
    straight, turned = (dci((f - 49.5) @ rotation(t).T, f, model="forest") for t in (0.0, np.pi / 4))
    assert straight["disentanglement"] > 0.95 and straight["completeness"] > 0.95
    assert turned["disentanglement"] < 0.02 and turned["completeness"] < 0.02


def test_sampling_scores_of_a_rotated_pair():
    """pos_x and pos_y (both 32 values) rotated by 45° into two codes: holding either fixed shrinks both
    codes alike, so the β-VAE classifier cannot tell the two apart and FactorVAE's votes split evenly
    between the two codes: half of those votes are right, the other 3 factors all: (3 + 2·½) / 5 = 0.8."""
    grid, n = FactorGrid(), dict(n_train=300, n_eval=200, batch_size=32)
    m = np.eye(5)
    m[3:, 3:] = rotation(np.pi / 4)
    turned = lambda x: x @ m.T
    assert beta_vae_score(turned, grid, **n)["eval_accuracy"] == pytest.approx(0.8, abs=0.07)
    assert factor_vae_score(turned, grid, n_variance=2000, **n)["eval_accuracy"] == pytest.approx(0.8, abs=0.07)


def test_factor_vae_score_on_rendered_dsprites():
    """A hand-made encoder of real images (centroid and area) knows position and scale, not shape or angle."""
    g = DSprites(32)
    side = (np.arange(32) + 0.5) / 32
    def encode(x):
        m = x[:, 0].sum((1, 2))
        return np.c_[(x[:, 0] * side).sum((1, 2)) / m, (x[:, 0] * side[:, None]).sum((1, 2)) / m, m / 100]
    res = factor_vae_score(encode, g, n_train=300, n_eval=200, batch_size=32, n_variance=1000, prune=0.0)
    # 3 of 5 factors are found (pos_x, pos_y, scale); shape and orientation votes go to a guess
    assert 0.5 < res["eval_accuracy"] < 0.85 and res["active_dims"] == 3


def test_bad_input():
    with pytest.raises(VgmError, match="same N"):
        mig(np.zeros((10, 3)), np.zeros((9, 2), dtype=int))
    with pytest.raises(VgmError, match="NaN"):
        mig(np.full((10, 3), np.nan), np.zeros((10, 2), dtype=int))
    with pytest.raises(VgmError, match="integer"):
        dci(np.zeros((10, 3)), np.zeros((10, 2)))
    with pytest.raises(VgmError, match="n-train"):
        factor_vae_score(lambda x: x, FactorGrid(), n_train=0)
    with pytest.raises(VgmError, match="encode"):
        beta_vae_score(lambda x: x[:, 0], FactorGrid(), n_train=10, n_eval=10)


def test_mig_and_sap_leave_out_constant_factors_and_refuse_when_all_are(factors):
    f = factors[:2000]
    z = f.astype(float) + np.random.default_rng(9).normal(scale=0.3, size=f.shape)
    with_constant = np.c_[f, np.full(len(f), 3)]              # H = 0: no normalised MI, nothing to predict
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no NaN, no 'mean of empty slice'
        assert mig(z, with_constant) == mig(z, f)             # left out, not counted as a gap of 0
        assert sap(z, with_constant) == sap(z, f)
        for metric in (mig, sap):
            with pytest.raises(VgmError, match="every factor is constant"):
                metric(z, np.full((2000, 2), 7))


def test_beta_vae_score_refuses_a_single_class():
    with pytest.raises(VgmError, match="two classes"):     # not scikit-learn's ValueError
        beta_vae_score(lambda x: x, FactorGrid(), n_train=1, n_eval=10, batch_size=4)


def saved_run(folder, model, data: str = "dsprites32"):
    """A run folder as `vgm train` leaves it, as far as `vgm metrics` reads it."""
    model.save(folder)
    (folder / "config.json").write_text(json.dumps({
        "kind": model.kind, "model": {}, "train": {},
        "data": {"data": data, "data_dir": None, "binarize": "none", "val_fraction": 0.1}}))
    return folder


def metrics_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["metrics", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_metrics_cli_one_line_errors(tmp_path, capsys):
    flow = saved_run(tmp_path / "flow", RealNVP(input_shape=(1, 32, 32)))
    code, _, err = metrics_cli(capsys, flow)
    assert code == 2 and err.startswith("vgm: error:") and err.count("\n") == 1 and "no encoder" in err
    run = saved_run(tmp_path / "bv", BetaVAE(input_shape=(1, 32, 32)))
    for flag, value in (("--n-train", 1), ("--batch-size", 1), ("--n-codes", 1)):
        code, out, err = metrics_cli(capsys, run, flag, value)
        assert code == 2 and err.count("\n") == 1 and f"{flag[2:]} must be >= 2" in err and out == ""


def test_kl_of_is_the_models_kl_per_dimension():
    torch.manual_seed(0)
    m = BetaVAE(input_shape=(1, 32, 32)).eval()
    x = (torch.rand(30, 1, 32, 32) < 0.2).float()
    kl = kl_of(m)(x.numpy())
    with torch.no_grad():
        q = m.encode(x)
        total = kl_divergence(q, m.prior)                   # torch's own Gaussian KL, summed over dimensions
        per_dim = kl_divergence(q.base_dist, Normal(0.0, 1.0))
    assert kl.shape == (30, 10) and np.allclose(kl.sum(1), total.numpy(), rtol=1e-5)
    assert np.allclose(kl, per_dim.numpy(), rtol=1e-5, atol=1e-7)
    assert kl_of(AE(input_shape=(1, 32, 32))) is None       # a point mass has no KL to report
    vamp = MODELS["vamp"](input_shape=(1, 32, 32))           # Gaussian q, but KL to N(0, 1) is not its KL
    assert gaussian(vamp.encode(x[:1])) is not None and kl_of(vamp) is None


class DeadDims:
    """q(z|x) of FactorGrid 'images' (the factor values): dims 0–4 carry the factors (sd 0.1: ≈ 2 nats each);
    dims 5–7 are unused, q ≈ N(0, 1) (sd 0.99) but with a mean 0.1·sin(·) that still varies over the data, with
    a standard deviation ≈ 0.07 above FactorVAE's 0.05 pruning threshold: a few thousandths of a nat."""
    config = SimpleNamespace(input_shape=(5,))
    device = torch.device("cpu")
    prior = Independent(Normal(torch.zeros(8), torch.ones(8)), 1)
    w = torch.tensor(np.random.default_rng(10).normal(size=(5, 3)))

    def eval(self):
        return self

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.double()
        mu = torch.cat([x / torch.tensor(SIZES), 0.1 * torch.sin(x @ self.w)], 1)
        sd = torch.cat([torch.full((len(x), 5), 0.1), torch.full((len(x), 3), 0.99)], 1).double()
        return mu, sd

    def encode(self, x: torch.Tensor):
        return Independent(Normal(*self.params(x)), 1)


def test_active_dims_by_kl_beside_factor_vae_pruning():
    m, grid = DeadDims(), FactorGrid()
    res = score_all(encoder_of(m), grid, n_codes=500, n_train=100, n_eval=50, batch_size=16, n_variance=500,
                    dci_model="forest", seed=3, kl=kl_of(m))
    assert res["factor_vae_score"]["active_dims"] == 8      # the dead dims' means vary enough to be kept
    assert res["active_dims_kl"] == 5 and res["kl_active_threshold"] == KL_ACTIVE == 0.1 and res["latent_dims"] == 8
    mu, sd = m.params(torch.as_tensor(grid.sample_factors(500, np.random.default_rng(3)), dtype=torch.float64))
    expected = kl_divergence(Normal(mu, sd), Normal(0.0, 1.0)).mean(0).numpy()
    assert np.allclose(res["kl_per_dim"], expected, rtol=1e-9)
    assert min(expected[:5]) > 1.5 and max(expected[5:]) < 0.01
    assert res["constant_factors"] == [] and set(res["seconds"]) == {
        "codes", "kl", "mig", "sap", "dci", "beta_vae_score", "factor_vae_score"}


SMALL = ("--n-codes", 200, "--n-train", 20, "--n-eval", 10, "--batch-size", 8, "--n-variance", 200,
         "--dci-model", "forest", "--seed", 4)


def test_metrics_cli_reports_kl_on_the_codes_it_scores(tmp_path, capsys):
    torch.manual_seed(1)
    run = saved_run(tmp_path / "bv", BetaVAE(input_shape=(1, 32, 32)))
    code, out, err = metrics_cli(capsys, run, *SMALL, "--json", "--quiet")
    assert code == 0 and err == ""
    res = json.loads(out)
    grid = DSprites(32)
    x = torch.as_tensor(grid.images(grid.sample_factors(200, np.random.default_rng(4))), dtype=torch.float32)
    model = vgm_load(run)
    assert np.allclose(res["kl_per_dim"], kl_per_dim(model, x), rtol=1e-4)
    assert res["active_dims_kl"] == sum(v > 0.1 for v in res["kl_per_dim"]) and res["latent_dims"] == 10
    # the table: every value starts in one column; progress goes to stderr, one plain line per stage (no tty)
    code, out, err = metrics_cli(capsys, run, *SMALL)
    lines = out.splitlines()[1:]
    starts = {re.match(r"^  \S+(?: \S+)* +", line).end() for line in lines}
    assert code == 0 and len(starts) == 1 and len(lines) == 11
    assert any(line.split()[:3] == ["active", "dims,", "KL"] for line in lines)
    assert err.splitlines() == [f"vgm metrics: [{i}/7] {name}" for i, name in enumerate(
        ["codes", "kl", "mig", "sap", "dci", "beta_vae_score", "factor_vae_score"], 1)]


def test_progress_is_a_bar_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert list(stages(["a", "b"], progress=True)) == ["a", "b"]
    text = sys.stderr.getvalue()
    assert "\r" in text and "vgm metrics" in text and "1/2 " in text and ", b]" in text and "[1/2]" not in text
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert list(stages(["a"], progress=False)) == ["a"] and sys.stderr.getvalue() == ""


def test_metrics_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["metrics", "--help"])
    text = capsys.readouterr().out.split("options:")[1]
    blocks = re.split(r"\n(?=  -)", text.strip("\n"))
    assert len(blocks) == 12
    for block in blocks[1:]:                                # all but -h
        assert "default" in block, block
