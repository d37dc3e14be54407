"""`vgm interpolate` (images, 2-D points, seqvae text and curves) and `vgm traverse`: paths, endpoints, KLs, refusals."""
from __future__ import annotations

import dataclasses
import json
import math
from argparse import Namespace

import numpy as np
import pytest
import torch

import vgm
from vgm.checkpoint import write_json
from vgm.cli import main
from vgm.data import load as load_data
from vgm.data.tokens import encode_known, to_text
from vgm.flows.models import RealNVP
from vgm.models.ae import AE
from vgm.models.seqvae import SeqVAE
from vgm.models.vae import VAE
from vgm.models.vamp import Vamp
from vgm.models.vrnn import VRNN
from vgm.tools import interpolate as interp
from vgm.tools.traversal import kl_per_dim, save_traversals, traversal
from vgm.train import TrainConfig


def make_run(folder, model, data: str, data_dir=None):
    """A run folder holding `model` (untrained: the commands' arithmetic does not need a trained one)."""
    model.save(folder)
    write_json(folder / "config.json", {
        "vgm_version": vgm.__version__, "kind": model.kind,
        "data": {"data": data, "data_dir": data_dir, "binarize": "none", "val_fraction": 0.1},
        "train": dataclasses.asdict(TrainConfig()), "model": json.loads(json.dumps(dataclasses.asdict(model.config)))})
    return folder


def one_line_error(capsys, code: int, *words: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vgm: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    torch.manual_seed(0)
    return make_run(tmp_path_factory.mktemp("vae"), VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,)), "digits")


@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    meta = load_data("names").meta
    torch.manual_seed(0)
    model = SeqVAE(likelihood="categorical", alphabet=meta["alphabet"], max_len=meta["max_len"], hidden=16,
                   embed_dim=8, latent_dim=4)
    return make_run(tmp_path_factory.mktemp("names"), model, "names")


# ----- paths ---------------------------------------------------------------------------------------------

def test_slerp_against_closed_forms():
    t = torch.linspace(0, 1, 7)
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 3.0])            # orthogonal: Ω = π/2
    expect = torch.stack([2 * torch.cos(t * math.pi / 2), 3 * torch.sin(t * math.pi / 2)], 1)
    torch.testing.assert_close(interp.slerp(a, b, t), expect)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, generator=g), torch.randn(5, generator=g)
    b = b / b.norm() * a.norm()                                        # one norm: the path stays on the sphere
    s = interp.slerp(a, b, t)
    torch.testing.assert_close(s.norm(dim=1), a.norm().expand(7))
    cos = torch.clamp((s[:-1] * s[1:]).sum(1) / a.norm() ** 2, -1, 1)
    omega = torch.arccos(a @ b / a.norm() ** 2)
    torch.testing.assert_close(torch.arccos(cos), (omega / 6).expand(6), atol=1e-4, rtol=1e-4)   # equal angles
    torch.testing.assert_close(s[[0, -1]], torch.stack([a, b]))
    torch.testing.assert_close(interp.slerp(a, 2 * a, t), interp.lerp(a, 2 * a, t))    # parallel: the line
    torch.testing.assert_close(interp.slerp(0 * a, b, t), interp.lerp(0 * a, b, t))    # a zero code: the line
    torch.testing.assert_close(interp.lerp(a, b, t)[3], (a + b) / 2)


def test_image_rows_show_real_inputs_and_reconstructions(digits):
    torch.manual_seed(0)
    model = VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    xa, xb = digits.test[3], digits.test[5]
    rows, z = interp.image_paths(model, xa, xb, steps=5)
    with torch.no_grad():
        za, zb = model.encode(xa[None]).mean[0], model.encode(xb[None]).mean[0]
        recon = model.reconstruct(torch.stack([xa, xb]))
        mid_line = model.decode((za + zb) / 2).mean
        mid_sphere = model.decode(interp.slerp(za, zb, torch.tensor([0.5]))[0]).mean
    torch.testing.assert_close(z, torch.stack([za, zb]))
    for name, mid in (("linear", mid_line), ("spherical", mid_sphere)):
        r = rows[name]
        assert r.shape == (7, 1, 8, 8)
        assert torch.equal(r[0], xa) and torch.equal(r[-1], xb)                  # the real inputs
        torch.testing.assert_close(r[[1, -2]], recon)                          # the ends: reconstructions
        torch.testing.assert_close(r[3], mid)
    assert not torch.allclose(mid_line, mid_sphere)


# ----- vgm interpolate ----------------------------------------------------------------------------------

def test_cli_interpolates_an_image_vae(vae_run, digits, capsys, monkeypatch):
    shown = {}
    real = interp.image_strip
    monkeypatch.setattr(interp, "image_strip", lambda path, rows, heads, title: (shown.update(rows=rows, heads=heads),
                                                                                  real(path, rows, heads, title)))
    assert main(["interpolate", str(vae_run), "--i", "3", "--j", "5", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    model = vgm.load(vae_run)
    with torch.no_grad():
        za, zb = model.encode(digits.test[[3, 5]]).mean
    angle = math.degrees(math.acos(float(za @ zb / (za.norm() * zb.norm()))))
    assert f"a = test[3], b = test[5]: |z_a| {za.norm():.3f}, |z_b| {zb.norm():.3f}, angle {angle:.1f}°" in out
    assert (vae_run / "interpolation.png").stat().st_size > 0 and f"wrote {vae_run / 'interpolation.png'}" in out
    assert list(shown["rows"]) == ["linear", "spherical"] and shown["heads"][0] == "a (data)"
    assert shown["heads"][-1] == "b (data)" and len(shown["heads"]) == 6
    for r in shown["rows"].values():
        assert torch.equal(r[0], digits.test[3]) and torch.equal(r[-1], digits.test[5])


def test_cli_interpolates_2d_points(tmp_path, capsys):
    torch.manual_seed(0)
    run = make_run(tmp_path / "run", VAE(input_shape=(2,), latent_dim=2, hidden=(8,), likelihood="gaussian"), "moons")
    assert main(["interpolate", str(run), "--steps", "3", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0 and "a = test[0], b = test[1]" in capsys.readouterr().out


def test_interpolate_refusals(tmp_path, vae_run, capsys):
    flow = make_run(tmp_path / "flow", RealNVP(input_shape=(2,), depth=2, hidden=8), "moons")
    one_line_error(capsys, main(["interpolate", str(flow)]), "'realnvp' flow", "no latent code")
    torch.manual_seed(0)
    vrnn = make_run(tmp_path / "vrnn", VRNN(likelihood="gaussian", input_dim=1, max_len=52, hidden=8, latent_dim=2), "co2")
    one_line_error(capsys, main(["interpolate", str(vrnn)]), "no single latent code")
    one_line_error(capsys, main(["interpolate", str(vae_run), "--a", "x"]), "--a and --b take text")
    one_line_error(capsys, main(["interpolate", str(vae_run), "--j", "359"]), "--j 359 is out of range", "359 examples")
    one_line_error(capsys, main(["interpolate", str(vae_run), "--steps", "1"]), "--steps must be >= 2")


def test_encode_known_folds_case_or_names_the_strangers():
    lower = "abcdefghijklmnopqrstuvwxyz"
    tokens, used = encode_known("John", lower)
    assert used == "john" and torch.equal(tokens, encode_known("john", lower)[0])
    with pytest.raises(ValueError, match=r"characters '!', '3' not in"):
        encode_known("Jo3n!", lower)
    with pytest.raises(ValueError, match=r"character 'N' not in"):               # capitals in the alphabet: no folding
        encode_known("ANNA", "Aabn")
    assert encode_known("Ann", "Aabn")[1] == "Ann"


def test_cli_text_interpolation_shows_and_names_its_ends(names_run, capsys):
    names = load_data("names")
    alpha = names.meta["alphabet"]
    model = vgm.load(names_run)
    assert main(["interpolate", str(names_run), "--a", "John", "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    lines = (names_run / "interpolation.txt").read_text().splitlines()
    assert lines == printed.splitlines()[:-1] and len(lines) == 4 + 2
    picked = to_text(names.test[1:2], alpha)[0]
    assert lines[0].split() == ["a", "john", "(--a", "'John',", "folded", "to", "lower", "case)"]
    assert lines[-1].split()[:2] == ["b", picked] and "picked from the test split: sequence 1 (--j)" in lines[-1]
    recon = to_text(model.reconstruct(encode_known("john", alpha)[0]), alpha)[0]
    assert lines[1].split() == ["t=0.00", *([recon] if recon else [])]          # t = 0: a's reconstruction
    assert [line.split()[0] for line in lines[1:-1]] == ["t=0.00", "t=0.33", "t=0.67", "t=1.00"]
    assert main(["interpolate", str(names_run), "--a", "mary", "--b", "ann"]) == 0
    lines = (names_run / "interpolation.txt").read_text().splitlines()
    assert lines[0].split()[:3] == ["a", "mary", "(--a"] and lines[-1].split()[:3] == ["b", "ann", "(--b"]
    capsys.readouterr()
    one_line_error(capsys, main(["interpolate", str(names_run), "--a", "Jo3n"]), "--a 'Jo3n'", "'3' not in")


def test_series_interpolation_shows_the_real_windows(tmp_path, monkeypatch):
    co2 = load_data("co2")
    torch.manual_seed(0)
    model = SeqVAE(likelihood="gaussian", input_dim=1, max_len=52, hidden=8, latent_dim=2).eval()
    panels = []
    monkeypatch.setattr(interp, "series_figure", lambda path, p, title: panels.extend(p))
    args = Namespace(a=None, b=None, i=4, j=7, split="test", steps=3)
    interp.interpolate_sequences(model, args, co2.test, tmp_path / "i.png")
    assert [p[0] for p in panels] == ["a (data)", "t=0.00", "t=0.50", "t=1.00", "b (data)"]
    torch.testing.assert_close(panels[0][1][0][0], co2.test[4])
    torch.testing.assert_close(panels[-1][1][0][0], co2.test[7])
    torch.testing.assert_close(panels[1][1][0][0], model.reconstruct(co2.test[4:5])[0])


# ----- traversals --------------------------------------------------------------------------------------

def test_traversal_values_and_kl_per_dimension(digits):
    torch.manual_seed(0)
    model = VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    x0 = digits.test[2]
    t = traversal(model, x0, steps=5, span=2.0)
    with torch.no_grad():
        mu = model.encode(x0[None]).mean[0]
        z = mu.clone()
        z[1] = -1.0                                                       # row 1, column 1 of linspace(−2, 2, 5)
        torch.testing.assert_close(t[1, 1], model.decode(z).mean)
        q = model.encode(digits.test).base_dist
    m, s = q.loc.double(), q.scale.double()
    kl = (0.5 * (s ** 2 + m ** 2 - 1) - torch.log(s)).mean(0).numpy()      # KL(N(m, s²) ‖ N(0, 1)), closed form
    np.testing.assert_allclose(kl_per_dim(model, digits.test, batch_size=100), kl, rtol=1e-5)
    assert t.shape == (3, 5, 1, 8, 8)


def test_save_traversals_takes_x0_and_x_slice(tmp_path, digits):
    torch.manual_seed(0)
    model = VAE(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    kl_a = save_traversals(tmp_path / "a.png", model, digits.test[0], digits.test, steps=4)
    kl_b = save_traversals(tmp_path / "b.png", model, digits.test[:1], digits.test, steps=4)
    np.testing.assert_array_equal(kl_a, kl_b)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with pytest.raises(ValueError, match="one example"):
        save_traversals(tmp_path / "c.png", model, digits.test[:2], digits.test)


def test_cli_traverse(vae_run, digits, capsys):
    assert main(["traverse", str(vae_run), "--dims", "3", "--range", "2", "--steps", "5", "--i", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    with torch.no_grad():
        q = vgm.load(vae_run).encode(digits.test).base_dist
    kl = (0.5 * (q.scale ** 2 + q.loc ** 2 - 1) - torch.log(q.scale)).mean(0)
    top = torch.argsort(kl, descending=True)[:3].tolist()
    shown = [line.split() for line in out[1:4]]
    assert [row[0] for row in shown] == [f"z{j}" for j in top]
    np.testing.assert_allclose([float(row[1]) for row in shown], kl[top].numpy(), atol=1e-4)
    assert "359 test examples" in out[0] and out[-1] == f"wrote {vae_run / 'traversal.png'}"
    assert (vae_run / "traversal.png").stat().st_size > 0


def test_traverse_refusals(tmp_path, vae_run, names_run, capsys):
    one_line_error(capsys, main(["traverse", str(names_run)]), "'seqvae' model of sequences")
    ae = make_run(tmp_path / "ae", AE(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,)), "digits")
    one_line_error(capsys, main(["traverse", str(ae)]), "deterministic")
    flow = make_run(tmp_path / "flow", RealNVP(input_shape=(2,), depth=2, hidden=8), "moons")
    one_line_error(capsys, main(["traverse", str(flow)]), "flow")
    vamp = make_run(tmp_path / "vamp", Vamp(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,)), "digits")
    one_line_error(capsys, main(["traverse", str(vamp)]), "'vamp'", "VampMixture", "not a factorised Normal")
    for args, words in ((["--dims", "5"], ("--dims 5", "4 latent dimensions")), (["--range", "-1"], ("--range",)),
                        (["--steps", "1"], ("--steps",)), (["--i", "400"], ("--i 400", "359 examples"))):
        one_line_error(capsys, main(["traverse", str(vae_run), *args]), *words)
