"""One test over every registered model, as zuko's flow test runs over every flow.

For each name in vgm.MODELS: a tiny model on tiny data through the Python API (per-example loss terms, finite
values, a gradient reaching every parameter the loss trains, save/load giving the same loss, sample shapes), and
through the command line (train, an exact resume, evaluate, sample, reconstruct). A newly registered model is
covered without a new test: it runs with its defaults unless TINY below makes it smaller.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import vgm
from vgm.cli import main
from vgm.registry import MODELS

# command-line options that make each model small (its data and a few sizes); a model missing here runs with
# its config's defaults on its default data
MLP = ["--hidden", "16", "--latent-dim", "3"]
TINY: dict[str, list[str]] = {
    "ae": ["--data", "digits", *MLP],
    "vae": ["--data", "digits", *MLP],
    "betavae": ["--data", "digits", "--arch", "mlp", *MLP],
    "tcvae": ["--data", "digits", "--arch", "mlp", *MLP],
    "dipvae": ["--data", "digits", "--arch", "mlp", *MLP],
    "factorvae": ["--data", "digits", "--arch", "mlp", *MLP, "--disc-hidden", "16", "--disc-layers", "2"],
    "cvae": ["--data", "digits", *MLP],
    "iwae": ["--data", "digits", *MLP, "--k", "3"],
    "vamp": ["--data", "digits", *MLP, "--pseudo-inputs", "5"],
    "iaf": ["--data", "digits", *MLP, "--iaf-depth", "1", "--iaf-hidden", "8"],
    "hvae2": ["--data", "digits", "--hidden", "16", "--latent-dim", "3", "--hidden2", "8", "--latent2-dim", "2"],
    "vqvae": ["--data", "digits", "--codebook-size", "8", "--code-dim", "4", "--width", "8", "--prior-width", "8",
              "--prior-layers", "1"],
    "realnvp": ["--data", "moons", "--depth", "2", "--hidden", "8"],
    "maf": ["--data", "moons", "--depth", "2", "--hidden", "8"],
    "nsf": ["--data", "moons", "--depth", "2", "--hidden", "8"],
    "glow": ["--data", "digits", "--levels-l", "1", "--steps-k", "1", "--width", "8"],
    "seqvae": ["--data", "names", "--hidden", "16", "--latent-dim", "3", "--embed-dim", "8"],
    "vrnn": ["--data", "co2", "--hidden", "8", "--latent-dim", "2", "--embed-dim", "8"],
}
COMMON = ["--batch-size", "128", "--quiet", "--seed", "3"]


def train(kind: str, out, *extra: str) -> None:
    assert main(["train", kind, *TINY.get(kind, []), *COMMON, "--out", str(out), *extra]) == 0


def trained_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters the model's own loss trains: all of them but those a second optimizer steps
    (Model.auxiliary_parameters, e.g. FactorVAE's discriminator, VQ-VAE's code prior)."""
    aux = {id(p) for p in getattr(model, "auxiliary_parameters", lambda: [])()}
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in aux]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("every-model")


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_model_trains_resumes_exactly_and_runs_every_command(kind, runs, capsys):
    """Catches: a model whose loss is not per example, is non-finite, leaves a parameter without gradient (a
    branch the loss forgot), does not survive save/load, or breaks a command; and a resume that is not exact
    (an RNG, schedule or optimizer state not restored)."""
    whole, part = runs / f"{kind}-2", runs / f"{kind}-1"
    train(kind, whole, "--epochs", "2")
    train(kind, part, "--epochs", "1")
    train(kind, part, "--epochs", "2", "--resume")
    a, b = load_file(whole / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{kind}: {name} differs after a resume"

    model = vgm.load(whole)
    capsys.readouterr()
    assert main(["evaluate", str(whole), "--iw-samples", "4", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert all(torch.isfinite(torch.tensor(v)) for v in scores.values() if isinstance(v, (int, float)))
    assert main(["sample", str(whole), "-n", "4", "--seed", "0"]) == 0
    capsys.readouterr()
    if main(["reconstruct", str(whole), "-n", "4"]) != 0:          # flows: x = f⁻¹(f(x)), refused in one line
        err = capsys.readouterr().err.strip()
        assert "no reconstruction" in err and len(err.splitlines()) == 1, err
    capsys.readouterr()

    # the Python API on a few real examples of the run's data
    from vgm.run import checked_split, run_data
    x = checked_split(model, run_data(whole, None)[1], "test")[:6]
    model.train()
    torch.manual_seed(0)
    terms = model.loss(x) if not getattr(model, "conditional", False) else model.loss(x, torch.zeros(len(x), dtype=torch.long))
    assert "loss" in terms
    for key, value in terms.items():
        assert value.shape == (len(x),), f"{kind}: term {key} is not per example: {tuple(value.shape)}"
        assert torch.isfinite(value).all(), f"{kind}: term {key} is not finite"
    model.zero_grad()
    terms["loss"].mean().backward()
    missing = [n for n, p in trained_parameters(model) if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{kind}: no (finite) gradient reaches {missing}"

    model.eval()
    again = vgm.load(whole).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        l1 = (model.loss(x) if not getattr(model, "conditional", False) else model.loss(x, torch.zeros(len(x), dtype=torch.long)))["loss"]
        torch.manual_seed(1)
        l2 = (again.loss(x) if not getattr(again, "conditional", False) else again.loss(x, torch.zeros(len(x), dtype=torch.long)))["loss"]
    torch.testing.assert_close(l1, l2, rtol=0, atol=0)
    with torch.no_grad():
        drawn = model.sample(4) if not getattr(model, "conditional", False) else model.sample(4)
    drawn = drawn if torch.is_tensor(drawn) else torch.as_tensor(drawn)
    assert drawn.shape[0] == 4 and (drawn.shape[1:] == x.shape[1:] or x.dtype == torch.long), \
        f"{kind}: samples of shape {tuple(drawn.shape)} for data of shape {tuple(x.shape)}"
