"""Sequence VAEs (seqvae, vrnn): data, masks, bounds, collapse diagnostics, generation, CLI."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vgm
from vgm.cli import main
from vgm.data import Splits
from vgm.data import load as load_data
from vgm.models.seqvae import SeqVAE
from vgm.data.tokens import EOS, FIRST, PAD, UNK, encode_text, to_text
from vgm.errors import VgmError
from vgm.models.sequences import free_bits_kl, kl_weight, mask
from vgm.train import TrainConfig, fit
from vgm.models.vrnn import VRNN


@pytest.fixture(scope="module")
def names() -> Splits:
    return load_data("names")


def small(splits: Splits, n: int = 1200) -> Splits:
    return Splits(splits.train[:n], splits.val[:200], splits.test[:200], name=splits.name, meta=splits.meta)


def text_model(cls, splits, **kw):
    torch.manual_seed(0)
    keys = ("likelihood", "alphabet", "input_dim", "max_len")
    return cls(cls.Config(**{k: splits.meta[k] for k in keys if hasattr(cls.Config, k)},
                          hidden=64, embed_dim=16, latent_dim=8, **kw))


@pytest.fixture(scope="module")
def trained(names):
    """A seqvae with free bits (so z carries information), trained briefly on the names."""
    model = text_model(SeqVAE, names, free_bits=0.25)
    fit(model, small(names, 2500), TrainConfig(epochs=3, batch_size=64, lr=3e-3, device="cpu"), progress=False)
    return model.eval()


# ----- data ------------------------------------------------------------------------------------------------

def test_names_splits_alphabet_and_tokens(names):
    tr, va, te = names.train, names.val, names.test
    assert len(tr) + len(va) + len(te) > 5000 and names.meta["alphabet"] == "abcdefghijklmnopqrstuvwxyz"
    lines = {s: to_text(x, names.meta["alphabet"]) for s, x in (("tr", tr), ("va", va), ("te", te))}
    assert not set(lines["tr"]) & set(lines["te"]) and not set(lines["tr"]) & set(lines["va"])
    for x in (tr, va, te):
        n_tokens = mask(x).sum(1)
        assert (x[torch.arange(len(x)), n_tokens - 1] == EOS).all()          # each sequence ends with EOS
        assert (x[mask(x)] != PAD).all() and ((x == EOS).sum(1) == 1).all()
    assert names.meta["max_len"] == int(mask(tr).sum(1).max())


def test_text_file_vocab_from_all_lines_no_unknown_chars(tmp_path):
    """Every split is written in the alphabet (a model gives UNK probability 0), wherever the rare line falls."""
    f = tmp_path / "lines.txt"
    lines = [f"w{i}ord" for i in range(40)] + ["ünï"]
    f.write_text("\n\n".join(lines) + "\r\n", encoding="utf-8")
    s = load_data("text", str(f))
    alpha = s.meta["alphabet"]
    assert len(s.train) + len(s.val) + len(s.test) == 41
    assert alpha == "".join(sorted(set("".join(lines))))
    assert sorted(sum((to_text(x, alpha) for x in (s.train, s.val, s.test)), [])) == sorted(lines)
    assert not any((x == UNK).any() for x in (s.train, s.val, s.test))
    assert encode_text(["aü"], "a").tolist() == [[FIRST, UNK, EOS]]
    assert to_text(torch.tensor([[FIRST, UNK, EOS, PAD]]), "a") == ["a?"]


@pytest.mark.parametrize("content, message", [
    (b"", "no non-empty lines"), (b"\n  \n", "no non-empty lines"),
    (b"abc\n\xff\xfe bad\n", "not UTF-8"), (None, "does not exist")])
def test_bad_text_file_one_line_error(tmp_path, capsys, content, message):
    f = tmp_path / "data.txt"
    if content is not None:
        f.write_bytes(content)
    code = main(["train", "seqvae", "--data", "text", "--data-dir", str(f), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("vgm: error:") and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["seqvae", "--data", "digits"], "seqvae takes"),
    (["vrnn", "--data", "digits", "--likelihood", "gaussian"], "vrnn takes"),
    (["seqvae", "--data", "names", "--word-dropout", "1.5"], "word_dropout")])
def test_data_that_do_not_fit_one_line_error(tmp_path, capsys, args, message):
    code = main(["train", *args, "--out", str(tmp_path / "run"), "--quiet", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_models_check_their_data():
    with pytest.raises(ValueError, match="needs an alphabet"):
        SeqVAE(likelihood="categorical", alphabet="")
    model = VRNN(likelihood="gaussian", input_dim=1, hidden=8, latent_dim=2).train()
    with pytest.raises(VgmError, match=r"needs real-valued sequences \(N, T, 1\)"):
        model.loss(torch.zeros(4, 8, 8))
    model = SeqVAE(likelihood="categorical", alphabet="ab", hidden=8, latent_dim=2)
    with pytest.raises(VgmError, match="outside the model's alphabet"):
        model.evaluate(torch.tensor([[FIRST, UNK, EOS]]), iw_samples=0)


def test_series_and_rows(tmp_path):
    s = load_data("co2")
    assert s.train.shape[1:] == (52, 1) and len(s.train) > 1000 and torch.isfinite(s.train).all()
    assert abs(s.train.std().item() - 1) < 0.01 and s.train.mean(1).abs().max() < 1e-5
    r = load_data("digit-rows")
    assert r.train.shape[1:] == (8, 8) and r.meta["input_dim"] == 8 and r.meta["likelihood"] == "gaussian"


def test_mnist_rows(mnist10k):
    s = load_data("mnist-rows", str(mnist10k))
    assert s.train.shape[1:] == (28, 28) and s.meta["max_len"] == 28


# ----- masks -----------------------------------------------------------------------------------------------

def pad_more(x: torch.Tensor, extra: int = 5) -> torch.Tensor:
    fill = PAD if x.dtype == torch.long else float("nan")
    return torch.cat([x, torch.full((x.shape[0], extra, *x.shape[2:]), fill, dtype=x.dtype)], 1)


def real_batch() -> torch.Tensor:
    """Gaussian sequences of lengths 7, 3, 5 (NaN past the end)."""
    x = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(1))
    x[1, 3:] = float("nan")
    x[2, 5:] = float("nan")
    return x


@pytest.mark.parametrize("cls, cell", [(SeqVAE, "gru"), (SeqVAE, "lstm"), (VRNN, None)])
@pytest.mark.parametrize("kind", ["tokens", "real"])
def test_extra_padding_changes_nothing(names, cls, cell, kind):
    kw = {"cell": cell} if cell else {}
    if kind == "tokens":
        model, x = text_model(cls, names, **kw), names.train[:6]
    else:
        torch.manual_seed(0)
        model, x = cls(cls.Config(likelihood="gaussian", input_dim=2, max_len=7, hidden=32, latent_dim=4, **kw)), real_batch()
    assert len(set(mask(x).sum(1).tolist())) > 1          # a batch of mixed lengths
    model.eval()
    for fn in (model.terms, model.loss):                   # terms: no trimming, the masks alone do the work
        torch.manual_seed(3)
        a = fn(x)
        torch.manual_seed(3)
        b = fn(pad_more(x))
        for k in ("recon", "kl", "elbo"):
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    model.train()
    loss = model.loss(pad_more(x))["loss"].mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_each_sequence_scored_as_if_alone(names):
    """With z fixed, a sequence's log p(x|z) and q(z|x) do not depend on the other sequences in the batch."""
    model = text_model(SeqVAE, names).eval()
    x = names.train[:5]
    z = torch.randn(5, 8)
    batch = model.decode(z).log_prob(x)
    mu = model.encode(x).mean
    for i in range(5):
        one = x[i:i + 1, :int(mask(x[i:i + 1]).sum())]       # no padding at all
        torch.testing.assert_close(model.decode(z[i:i + 1]).log_prob(one), batch[i:i + 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode(one).mean, mu[i:i + 1], rtol=1e-5, atol=1e-5)


# ----- training pieces -------------------------------------------------------------------------------------

def test_kl_schedules_and_free_bits():
    assert [float(kl_weight(t, "linear", 100)) for t in (0, 50, 100, 300)] == [0, 0.5, 1, 1]
    assert [float(kl_weight(t, "cyclical", 100)) for t in (0, 25, 50, 99, 100, 125)] == [0, 0.5, 1, 1, 0, 0.5]
    assert kl_weight(7, "none", 100) == 1.0
    kl = torch.tensor([[0.1, 2.0], [0.3, 1.0]], requires_grad=True)     # unit means 0.2 (below λ) and 1.5
    fb = free_bits_kl(kl, 0.5)
    assert fb.mean().item() == pytest.approx(max(0.5, 0.2) + max(0.5, 1.5))
    fb.sum().backward()
    assert kl.grad[:, 0].abs().sum() == 0 and (kl.grad[:, 1] == 1).all()


def test_anneal_step_counts_training_calls_and_resumes_exactly(names, tmp_path):
    data = small(names, 300)
    cfg = dict(anneal="linear", anneal_steps=7, word_dropout=0.2)
    model = text_model(SeqVAE, data, **cfg)
    model.eval()
    model.loss(data.val)
    assert int(model.step) == 0
    model.train()
    beta = [model.loss(data.train[:64])["kl_weight"][0].item() for _ in range(3)]
    assert beta == pytest.approx([0, 1 / 7, 2 / 7]) and int(model.step) == 3

    tc = lambda e: TrainConfig(epochs=e, batch_size=64, device="cpu")
    full = text_model(SeqVAE, data, **cfg)
    h_full = fit(full, data, tc(3), run_dir=tmp_path / "full", progress=False)
    part = text_model(SeqVAE, data, **cfg)
    fit(part, data, tc(2), run_dir=tmp_path / "part", progress=False)
    resumed = text_model(SeqVAE, data, **cfg)
    h_res = fit(resumed, data, tc(3), run_dir=tmp_path / "part", resume=True, progress=False)
    assert [r["train"] for r in h_res] == [r["train"] for r in h_full]
    assert int(vgm.load(tmp_path / "part").step) == int(vgm.load(tmp_path / "full").step) > 0


def test_training_rows_are_the_elbo_or_named_for_word_dropout(names):
    """Training-mode terms under word dropout are the objective, logged as recon_word_dropout (no 'elbo' or
    'recon'); without it (seqvae, vrnn) the training 'elbo' is the model's ELBO: the eval-mode value, same z."""
    x = names.train[:64]
    model = text_model(SeqVAE, names, word_dropout=0.5)
    torch.manual_seed(1)
    t = model.train().loss(x)
    torch.manual_seed(1)                                          # the same z ~ q; no dropout in eval mode
    true = model.eval().loss(x)
    assert set(t) == {"loss", "recon_word_dropout", "kl", "kl_weight"}
    torch.testing.assert_close(t["loss"], t["recon_word_dropout"] + t["kl"])
    torch.testing.assert_close(t["kl"], true["kl"])
    assert (t["recon_word_dropout"] - true["recon"]).abs().mean() > 0.05  # the dropped inputs did change it
    for cls in (SeqVAE, VRNN):
        model = text_model(cls, names)
        torch.manual_seed(2)
        t = model.train().loss(x)
        torch.manual_seed(2)
        true = model.eval().loss(x)
        for k in ("elbo", "recon", "kl"):
            torch.testing.assert_close(t[k], true[k])


def test_inputless_decoder_and_step_counter(names, tmp_path):
    """--word-dropout 1 is Bowman's inputless decoder: every input after BOS is UNK, so two names that differ in
    their first letter only differ in the score of that letter. The annealing step advances only on steps that
    take a gradient (as betavae's capacity step)."""
    model = text_model(SeqVAE, names, word_dropout=1.0, anneal="linear", anneal_steps=10)
    a = names.meta["alphabet"]
    pair, first = encode_text(["ab", "bb"], a), encode_text(["a", "b"], a)[:, :1]      # first: no EOS, one step
    z = torch.randn(1, 8).expand(2, 8)
    with torch.no_grad():
        lp_train = model.train().decoder_log_prob(pair, z)
        lp_first = model.eval().decoder_log_prob(first, z)
        lp_eval = model.decoder_log_prob(pair, z)
    torch.testing.assert_close(lp_train[0] - lp_train[1], lp_first[0] - lp_first[1])
    assert abs((lp_eval[0] - lp_eval[1]) - (lp_first[0] - lp_first[1])) > 1e-3      # with inputs it differs

    model.train()
    with torch.no_grad():
        model.loss(names.train[:8])
    assert int(model.step) == 0
    model.loss(names.train[:8])
    assert int(model.step) == 1
    h = fit(model, small(names, 300), TrainConfig(epochs=1, batch_size=64, device="cpu"), progress=False)
    assert set(h[0]["train"]) == {"loss", "recon_word_dropout", "kl", "kl_weight"} and "elbo" in h[0]["val"]
    assert int(model.step) == 1 + 5                                  # 300 names in batches of 64: 5 steps


def prefixes(alphabet: str) -> tuple[list[str], torch.Tensor]:
    """A partition of all sequences: those that end (EOS) within 1 symbol, and the 2-symbol prefixes of the rest.
    Rows without EOS score a prefix: the mask stops at PAD."""
    ends = ["", *alphabet]
    pre = [a + b for a in alphabet for b in alphabet]
    x = torch.cat([encode_text(ends, alphabet, 3), encode_text(pre, alphabet, 3)])
    x[len(ends):, 2] = PAD
    return [s + "$" for s in ends] + pre, x


def categories(tokens: torch.Tensor, alphabet: str) -> list[str]:
    """Each generated sequence's cell of the partition of prefixes()."""
    return [s + "$" if len(s) < 2 else s[:2] for s in to_text(tokens, alphabet)]


def chi_square(labels: list[str], observed: list[str], probs: torch.Tensor) -> float:
    counts = np.array([observed.count(k) for k in labels], dtype=float)
    expected = len(observed) * probs.numpy()
    return float(((counts - expected) ** 2 / expected).sum())


def skewed(model):
    """An untrained model with uneven output probabilities (near-uniform ones would hide a wrong sampler), whose
    raw softmax gives PAD, BOS and UNK a good share of the mass."""
    with torch.no_grad():
        model.out.net.weight.mul_(4)
        model.out.net.bias.normal_(0, 1)
    return model.eval()


def test_seqvae_scores_the_distribution_it_samples():
    """The scored probabilities of a partition of all sequences sum to 1, each step's distribution over
    alphabet + EOS sums to 1, and 20,000 sequences generated from one z fall into the cells as scored (χ² with
    6 degrees of freedom; 22.5 is its 0.999 quantile; measured 2.4, and 54 if sampling used temperature 1.1)."""
    torch.manual_seed(0)
    model = skewed(SeqVAE(likelihood="categorical", alphabet="ab", max_len=3, hidden=16, embed_dim=8, latent_dim=2))
    labels, x = prefixes("ab")
    z = torch.randn(1, 2)
    with torch.no_grad():
        probs = model.decode(z.expand(len(x), 2)).log_prob(x).exp()
        step = model.out(model.decoder(torch.randn(5, 1, 10))[0]).probs
    assert probs.sum().item() == pytest.approx(1, abs=1e-5)
    torch.testing.assert_close(step.sum(-1), torch.ones(5, 1))
    assert (step[..., [PAD, 1, UNK]] == 0).all()
    torch.manual_seed(1)
    drawn = categories(model.generate(z.expand(20000, 2)), "ab")
    assert chi_square(labels, drawn, probs) < 22.5


def test_vrnn_scores_the_distribution_it_samples():
    """The same for the VRNN, whose probabilities are importance-weighted estimates (K = 4000: the sum within 1%;
    χ² measured 2.4, and 168 if sampling used temperature 1.1)."""
    torch.manual_seed(0)
    model = skewed(VRNN(likelihood="categorical", alphabet="ab", max_len=3, hidden=16, embed_dim=8, latent_dim=2))
    labels, x = prefixes("ab")
    probs = model.log_px(x, 4000).exp()
    assert probs.sum().item() == pytest.approx(1, abs=0.01)
    drawn = categories(model.sample(20000), "ab")
    assert chi_square(labels, drawn, probs / probs.sum()) < 22.5


# ----- bounds and diagnostics on trained models --------------------------------------------------------------

def test_iw_bound_above_elbo_and_growing_with_k(trained, names):
    x = names.test[:100]
    torch.manual_seed(0)
    elbo = torch.stack([trained.terms(x)["elbo"] for _ in range(20)]).mean(0)
    lk = {k: torch.stack([trained.log_px(x, k) for _ in range(reps)]).mean(0).mean().item()
          for k, reps in ((1, 20), (10, 4), (100, 1))}
    assert lk[1] == pytest.approx(elbo.mean().item(), abs=0.05)        # L_1 is the ELBO
    assert elbo.mean().item() < lk[10] - 0.05 < lk[100] - 0.05


def test_vrnn_iw_bound(names):
    model = text_model(VRNN, names)
    fit(model, small(names, 600), TrainConfig(epochs=2, batch_size=64, lr=3e-3, device="cpu"), progress=False)
    x = names.test[:60]
    torch.manual_seed(0)
    elbo = torch.stack([model.terms(x)["elbo"] for _ in range(10)]).mean().item()
    l1 = torch.stack([model.log_px(x, 1) for _ in range(10)]).mean().item()
    l50 = model.log_px(x, 50).mean().item()
    assert l1 == pytest.approx(elbo, abs=0.05) and l50 > elbo
    ev = model.evaluate(x, iw_samples=20, batch_size=64)
    assert ev["log_px"] >= ev["elbo"] and len(ev["kl_per_unit"]) == 8
    assert sum(ev["kl_per_unit"]) == pytest.approx(ev["kl"], rel=1e-4)
    assert ev["elbo"] == pytest.approx(-(ev["recon"] + ev["kl"]), abs=1e-4)


def test_diagnostics_detect_collapse_when_decoder_ignores_z(names, trained):
    data = small(names, 1500)
    model = text_model(SeqVAE, data)
    zcols = model.decoder.weight_ih_l0[:, model.config.embed_dim:]
    with torch.no_grad():                                     # a decoder that cannot see z
        zcols.zero_()
        model.z_to_h.weight.zero_()
    e = model.config.embed_dim
    model.decoder.weight_ih_l0.register_hook(lambda g: torch.cat([g[:, :e], torch.zeros_like(g[:, e:])], 1))
    model.z_to_h.weight.requires_grad_(False)
    fit(model, data, TrainConfig(epochs=3, batch_size=64, lr=3e-3, device="cpu"), progress=False)
    assert model.decoder.weight_ih_l0[:, e:].abs().max() == 0
    ev = model.evaluate(names.test[:300], iw_samples=0)
    assert ev["active_units"] == 0 and ev["kl"] < 0.1
    ok = trained.evaluate(names.test[:300], iw_samples=0)      # free bits: z in use
    assert ok["active_units"] > 0 and ok["kl"] > 1.0
    assert sum(ok["kl_per_unit"]) == pytest.approx(ok["kl"], rel=1e-4)


def test_annealing_keeps_active_units(names):
    """β ramps from 0 to 1 over the run (40 steps an epoch). Measured with seeds 0-3: annealed, 2-4 active units
    and a KL of 0.034-0.088 nats; trained plainly for the same budget, no active unit and a KL of 0.007-0.010."""
    data = small(names, 2500)
    model = text_model(SeqVAE, data, anneal="linear", anneal_steps=120)
    fit(model, data, TrainConfig(epochs=3, batch_size=64, lr=3e-3, device="cpu"), progress=False)
    assert int(model.step) == 120
    ev = model.evaluate(names.test[:300], iw_samples=0)
    assert ev["active_units"] > 0 and ev["kl"] > 0.025


def test_prior_samples_use_alphabet_and_end_with_eos(trained, names):
    torch.manual_seed(0)
    s = trained.sample(200)
    alphabet = range(FIRST, FIRST + len(names.meta["alphabet"]))
    cap = 2 * names.meta["max_len"]                           # generation stops there if no EOS came
    ended = 0
    for row in s.tolist():
        end = row.index(EOS) if EOS in row else len(row)
        assert all(t in alphabet for t in row[:end]) and all(t == PAD for t in row[end + 1:])
        ended += EOS in row
    assert s.shape[1] <= cap and ended >= 0.98 * len(s)       # measured: 199 of 200 end with EOS
    texts = to_text(s, names.meta["alphabet"])
    assert np.mean([len(t) for t in texts]) == pytest.approx(np.mean(mask(names.train).sum(1).numpy() - 1), rel=0.35)


def test_interpolation_ends_decode_the_end_points(trained, names):
    a, b = names.test[:1], names.test[1:2]
    path = trained.interpolate(a, b, steps=5)
    assert path.shape[0] == 5
    torch.testing.assert_close(path[0, :a.shape[1]][:int(mask(trained.reconstruct(a)).sum())],
                               trained.reconstruct(a)[0, :int(mask(trained.reconstruct(a)).sum())])


@pytest.mark.parametrize("cls, name, step", [(SeqVAE, "co2", 8), (VRNN, "digit-rows", 2)])
def test_real_valued_models_train(cls, name, step):
    data = load_data(name)
    data = Splits(data.train[::step], data.val, data.test, meta=data.meta)
    torch.manual_seed(0)
    m = cls(cls.Config(**{k: data.meta[k] for k in ("likelihood", "alphabet", "input_dim", "max_len")},
                       hidden=32, latent_dim=4))
    h = fit(m, data, TrainConfig(epochs=3, batch_size=32, lr=3e-3, device="cpu"), progress=False)
    assert h[-1]["val"]["elbo"] > h[0]["val"]["elbo"] + 1
    assert m.sample(3).shape == (3, *data.train.shape[1:])


# ----- any number of sequences rendered --------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 5, 20])
def test_render_any_number_of_sequences(tmp_path, monkeypatch, names, n):
    """Text: n lines; series: n panels (none dropped past 16); row-by-row digits: each reconstruction in the tile
    under its original, rows of at most 8."""
    import vgm.models.sequences as seq
    import vgm.plots as plots
    figures, arrays = [], []
    real_save = seq.save_figure
    monkeypatch.setattr(seq, "save_figure", lambda fig, path, **kw: (figures.append(fig), real_save(fig, path, **kw))[1])
    monkeypatch.setattr(plots, "save_png", lambda path, array, scale=4: arrays.append(array))
    text = text_model(VRNN, names)
    x = names.test[:n]
    text.render_reconstructions(x, text.reconstruct(x), tmp_path / "r.png")
    text.render_samples(text.sample(n), tmp_path / "s.png")
    assert len((tmp_path / "r.txt").read_text().splitlines()) == n == len((tmp_path / "s.txt").read_text().splitlines())
    assert (tmp_path / "r.png").stat().st_size > 0

    torch.manual_seed(0)
    series = SeqVAE(likelihood="gaussian", input_dim=1, max_len=12, hidden=8, latent_dim=2).eval()
    x = torch.randn(n, 12, 1)
    figures.clear()
    series.render_reconstructions(x, series.reconstruct(x), tmp_path / "c.png")
    series.render_samples(series.sample(n), tmp_path / "cs.png")
    assert [sum(1 for ax in f.axes if ax.lines) for f in figures] == [n, n]
    assert [len(ax.lines) for ax in figures[0].axes if ax.lines] == [2] * n         # data and reconstruction

    rows = VRNN(likelihood="gaussian", input_dim=8, max_len=8, hidden=8, latent_dim=2).eval()
    x = torch.rand(n, 8, 8)
    recon = rows.reconstruct(x)
    rows.render_reconstructions(x, recon, tmp_path / "d.png")
    pic, cols = arrays[-1], min(n, 8)
    assert pic.shape == (2 * math.ceil(n / cols) * 9 + 1, cols * 9 + 1)
    for i in range(n):
        r, q = divmod(i, cols)
        tile = lambda row: pic[1 + row * 9:9 + row * 9, 1 + q * 9:9 + q * 9]
        np.testing.assert_allclose(tile(2 * r), x[i].clamp(0, 1).numpy(), atol=1e-6)
        np.testing.assert_allclose(tile(2 * r + 1), recon[i].clamp(0, 1).numpy(), atol=1e-6)


def test_reconstruct_five_of_a_vrnn_text_run(tmp_path, names, capsys):
    lines = tmp_path / "names.txt"
    lines.write_text("\n".join(to_text(names.train[:300], names.meta["alphabet"])) + "\n")
    run = tmp_path / "v"
    assert main(["train", "vrnn", "--data", "text", "--data-dir", str(lines), "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--out", str(run), "--quiet"]) == 0
    assert main(["reconstruct", str(run), "-n", "5"]) == 0
    out = (run / "reconstructions.txt").read_text().splitlines()
    assert len(out) == 5 and all("  ->  " in line for line in out)
    assert main(["reconstruct", str(run), "-n", "3", "--out", str(tmp_path / "r.txt")]) == 0
    assert len((tmp_path / "r.txt").read_text().splitlines()) == 3         # a .txt --out gets the text, not a PNG


# ----- command line ----------------------------------------------------------------------------------------

SCRIPT = r"""
import sys
from vgm.cli import main
run, out, lines = sys.argv[1:4]
codes = [main(["train", "seqvae", "--data", "text", "--data-dir", lines, "--epochs", "2", "--hidden", "32", "--latent-dim", "4",
               "--free-bits", "0.2", "--anneal", "cyclical", "--out", run, "--quiet"]),
         main(["evaluate", run, "--json", "--iw-samples", "5"]),
         main(["sample", run, "-n", "5"]),
         main(["interpolate", run, "--a", "anna", "--b", "bob", "--steps", "4"]),
         main(["train", "vrnn", "--data", "digit-rows", "--epochs", "1", "--hidden", "16", "--latent-dim", "2",
               "--out", out, "--quiet"]),
         main(["sample", out, "-n", "4"]),
         main(["interpolate", out])]
print("CODES", codes)
"""


def test_cli_train_evaluate_sample_interpolate(tmp_path, names):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lines = tmp_path / "names.txt"
    lines.write_text("\n".join(to_text(names.train[:400], names.meta["alphabet"])) + "\n")
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "s"), str(tmp_path / "v"), str(lines)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert "CODES [0, 0, 0, 0, 0, 0, 2]" in r.stdout, r.stderr
    res = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))
    for k in ("elbo", "log_px", "elbo_per_token", "log_px_per_token", "perplexity", "kl_per_unit", "active_units"):
        assert k in res
    assert res["log_px"] >= res["elbo"] - 0.5 and math.isclose(res["perplexity"], math.exp(-res["log_px_per_token"]))
    assert len(res["kl_per_unit"]) == 4
    samples = (tmp_path / "s" / "samples.txt").read_text().split("\n")[:5]
    assert all(s in r.stdout for s in samples)
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0
    interp = (tmp_path / "s" / "interpolation.txt").read_text().splitlines()
    assert len(interp) == 4 + 2 and (tmp_path / "s" / "interpolation.png").is_file()   # a, 4 points, b
    assert interp[0].split()[:2] == ["a", "anna"] and interp[-1].split()[:2] == ["b", "bob"]
    assert (tmp_path / "v" / "samples.png").stat().st_size > 0
    assert "vgm: error: " in r.stderr and "no single latent code" in r.stderr
