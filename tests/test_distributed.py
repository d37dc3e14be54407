"""torchrun with DDP on CPU (gloo, 2 processes on 127.0.0.1): the same global batch gives the same training as one
process, only rank 0 writes, a killed worker is restarted from the last checkpoint, and bad launches are one line.
Every launch is bounded in time and its processes are killed on failure."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vgm
from vgm.distributed import World, share

from conftest import run_cli

AE = ["ae", "--hidden", "32", "--latent-dim", "4", "--batch-size", "64", "--seed", "3", "--quiet"]
ENV = {"OMP_NUM_THREADS": "1"}


def torchrun(*args, nproc=2, extra=(), timeout=240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *extra,
           "-m", "vgm", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return vgm.load(run).state_dict()


def test_shares_cover_the_batch_once():
    for n in (0, 1, 5, 64, 67):
        for w in (1, 2, 3):
            parts = [share(n, World(r, w)) for r in range(w)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))          # contiguous, no overlap
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_two_gloo_processes_train_the_same_ae_as_one(tmp_path):
    # catches: a per-rank batch that is not batch/W, unweighted per-rank losses, ranks shuffling differently,
    # validation as a mean of per-rank means
    one = run_cli("train", *AE, "--epochs", "2", "--out", tmp_path / "one", env=ENV)
    assert one.returncode == 0, one.stderr
    two = torchrun("train", *AE, "--epochs", "2", "--out", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    ra = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(rb) == 2                                           # rank 0 alone wrote the metrics
    for x, y in zip(ra, rb):
        assert y["val"]["recon"] == pytest.approx(x["val"]["recon"], rel=1e-5)
        assert y["train"]["recon"] == pytest.approx(x["train"]["recon"], rel=1e-5)
    assert "2 processes" in two.stderr or two.returncode == 0


FAMILIES = """
import os, sys
import torch
import vgm.cli
from vgm.cli import main

def fit_and_keep_state(model, *args, **kwargs):       # every rank's final weights and buffers, for the test
    history = FIT(model, *args, **kwargs)
    rank = os.environ.get("RANK", "solo")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, f"{kwargs['run_dir']}.rank{rank}.pt")
    return history

FIT, vgm.cli.fit = vgm.cli.fit, fit_and_keep_state
VAE_LOSS, CHECK_BINARY = vgm.VAE.loss, []

def loss_of_binary_rows(self, x):     # --binarize dynamic: every rank trains on 0/1 rows (a grey row's expected
    if CHECK_BINARY and self.training:    # Bernoulli loss equals its binarized one, so the terms cannot tell)
        assert ((x == 0) | (x == 1)).all(), "a training row is not binarized"
    return VAE_LOSS(self, x)

vgm.VAE.loss = loss_of_binary_rows
INIT = vgm.train.data_dependent_init

def init_on_binary_rows(model, x, *args):           # and ActNorm initialises from a binarized batch
    if CHECK_BINARY:
        assert ((x == 0) | (x == 1)).all(), "the init batch is not binarized"
    return INIT(model, x, *args)

vgm.train.data_dependent_init = init_on_binary_rows

common = ["--epochs", "2", "--quiet", "--seed", "0"]
RUNS = {
    "realnvp": ["--data", "moons", "--depth", "4", "--hidden", "16", "--batch-size", "250", "--lr", "1e-5"],
    "maf": ["--data", "moons", "--depth", "2", "--hidden", "16", "--batch-size", "250", "--lr", "1e-5"],
    "nsf": ["--data", "moons", "--depth", "2", "--hidden", "16", "--batch-size", "250", "--lr", "1e-5"],
    "vae": ["--hidden", "64", "--latent-dim", "4", "--batch-size", "64"],
    "vae-dynamic": ["--hidden", "64", "--latent-dim", "4", "--batch-size", "64", "--binarize", "dynamic"],
    "glow-dynamic": ["--data", "digits", "--binarize", "dynamic", "--levels-l", "1", "--steps-k", "1", "--width",
                     "8", "--batch-size", "64"],
    "betavae": ["--data", "digits", "--hidden", "64", "--latent-dim", "4", "--batch-size", "64", "--capacity", "5",
                "--capacity-steps", "30"],
    "tcvae": ["--data", "digits", "--hidden", "64", "--latent-dim", "4", "--batch-size", "64"],
    "seqvae": ["--data", "names", "--hidden", "32", "--latent-dim", "4", "--batch-size", "128", "--anneal",
               "linear", "--anneal-steps", "50", "--word-dropout", "0.3"],
    "vrnn": ["--data", "co2", "--hidden", "16", "--latent-dim", "2", "--batch-size", "64"],
}
for name, args in RUNS.items():
    CHECK_BINARY[:] = [True] if "--binarize" in args else []
    assert main(["train", name.split("-")[0], *args, *common, "--out", f"{sys.argv[1]}/{name}"]) == 0, name
"""


RUN_NAMES = ("realnvp", "maf", "nsf", "glow-dynamic", "vae", "vae-dynamic", "betavae", "tcvae", "seqvae", "vrnn")


def test_every_model_family_trains_the_same_under_torchrun(tmp_path):
    # Flows on continuous 2-D data have no noise in their loss: 2 processes must end with the weights of 1
    # (catches ActNorm initialised from one rank's share, or differently on each rank: its loc would differ by
    # ~0.08). At lr 1e-5: ActNorm's loc starts with a gradient that is 0 up to rounding, and Adam turns rounding
    # into a full step of ±lr, so at lr 1e-3 the runs drift apart by ~4e-3 in 72 steps. The VAE family draws
    # its noise per rank, so there the schedules must match step for step (catches a β-VAE capacity or a
    # seqvae KL ramp counting per-rank steps) and the validation terms agree far inside the seed-to-seed spread
    # (measured: |Δ elbo| <= 0.12 nats against a spread of 0.2-1.6 over seeds 0-2, 4.6 for vrnn). The β-TCVAE
    # estimator's batch under torchrun is tested exactly below. Both ranks end with equal weights and buffers
    # (catches a buffer that changes per rank, e.g. β-VAE's step counter counting one rank's steps twice, which
    # DDP no longer hides by broadcasting rank 0's buffers).
    script = tmp_path / "families.py"
    script.write_text(FAMILIES)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **ENV})
    assert one.returncode == 0, one.stderr[-2000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
           str(tmp_path / "two")]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **ENV})
    assert two.returncode == 0, two.stderr[-2000:]
    for name in RUN_NAMES:        # no buffer broadcast: every rank must hold the same weights and buffers itself
        r0, r1 = (torch.load(tmp_path / "two" / f"{name}.rank{r}.pt") for r in (0, 1))
        assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0), name
    for name in ("realnvp", "maf", "nsf"):
        a, b = weights(tmp_path / "one" / name), weights(tmp_path / "two" / name)
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=2e-4), (name, k)
    for name in ("vae", "vae-dynamic", "betavae", "tcvae", "seqvae", "vrnn"):
        ra = [json.loads(line) for line in (tmp_path / "one" / name / "metrics.jsonl").read_text().splitlines()]
        rb = [json.loads(line) for line in (tmp_path / "two" / name / "metrics.jsonl").read_text().splitlines()]
        assert len(ra) == len(rb) == 2, name
        for x, y in zip(ra, rb):
            for part in ("train", "val"):
                for k in ("capacity", "kl_weight"):
                    if k in x[part]:
                        assert y[part][k] == pytest.approx(x[part][k], rel=1e-6), (name, part, k)
            assert abs(y["val"]["elbo"] - x["val"]["elbo"]) < 0.5, name
    ramp = [json.loads(line)["val"]["kl_weight"] for line in
            (tmp_path / "two" / "seqvae" / "metrics.jsonl").read_text().splitlines()]
    assert 0 < ramp[0] < 1 == ramp[1]               # the ramp is seen mid-way (33 steps of 50), not skipped


def _batch_rank(rank: int, store: str, out: str) -> None:
    """One of 2 gloo ranks: its share of a batch of 7 through the terms that couple a batch's examples
    (β-TCVAE's q(z) estimate, DIP-VAE's covariance of the posterior), and the summed gradient."""
    import torch.distributed as dist
    from vgm.distributed import global_batch, share
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    world = World(rank, 2)
    got = {}
    for name, (model, x, eps) in _coupled_cases().items():
        a, b = share(len(x), world)
        with global_batch(len(x), world):
            terms = _coupled_terms(model, x[a:b], eps[a:b])
        sum(v.sum() for v in terms.values()).backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
        for g in grads:
            dist.all_reduce(g)
        got[name] = {"terms": {k: v.detach() for k, v in terms.items()}, "grads": grads, "rows": (a, b)}
    torch.save(got, f"{out}/rank{rank}.pt")
    dist.barrier()                  # neither rank closes its connections while the other still reads
    dist.destroy_process_group()


def _coupled_cases() -> dict:
    from vgm.models.betavae import BetaVAE
    from vgm.models.dipvae import DIPVAE
    from vgm.models.tcvae import TCVAE
    torch.manual_seed(0)
    tc = TCVAE(input_shape=(1, 2, 2), arch="mlp", hidden=(8,), latent_dim=3, dataset_size=50)
    dip = DIPVAE(input_shape=(1, 2, 2), arch="mlp", hidden=(8,), latent_dim=3, dip_type="ii")
    cases = {name: (m, torch.rand(7, 1, 2, 2), torch.randn(7, 3)) for name, m in (("tcvae", tc), ("dipvae", dip))}
    # β-VAE's capacity loss takes the sign of (batch mean KL − C): C between the two ranks' share means makes
    # the ranks' signs differ, so at least one differs from the global batch's
    beta = BetaVAE(input_shape=(1, 2, 2), arch="mlp", hidden=(8,), latent_dim=3, capacity=1.0, capacity_steps=1)
    x = torch.rand(7, 1, 2, 2)
    with torch.no_grad():
        kl = beta.loss(x)["kl"]
    beta.config.capacity = float(kl[:4].mean() + kl[4:].mean()) / 2
    beta.step.fill_(1)
    cases["betavae"] = (beta, x, torch.randn(7, 3))
    return cases


def _coupled_terms(model, x, eps) -> dict:
    """The batch-coupled terms of a model on fixed noise: tcvae's mi/tc/dwkl, dipvae's penalty (per example)."""
    from vgm.models.tcvae import TCVAE
    q = model.encode(x)
    if isinstance(model, TCVAE):
        return model.decomposition(q, q.mean + q.stddev * eps)
    torch.manual_seed(1)
    terms = model.loss(x)
    if "dip" in terms:
        return {"dip": terms["dip"]}
    return {"capacity_term": terms["loss"] - terms["recon"]}     # γ·sign(mean KL − C)·(kl − C): noise-free


def test_batch_coupled_terms_see_the_global_batch_under_torchrun(tmp_path):
    # catches: each rank mixing only its own rows' posteriors (q(z) of a batch of 3 or 4 instead of 7), the
    # stratified weights' diagonal at the wrong offset on rank 1, DIP-VAE's covariance of one rank's share,
    # β-VAE's capacity sign taken from one rank's mean KL, gradients not reaching the rank that owns a row
    want = {}
    for name, (model, x, eps) in _coupled_cases().items():
        terms = _coupled_terms(model, x, eps)
        sum(v.sum() for v in terms.values()).backward()
        want[name] = (terms, [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()])
    torch.multiprocessing.spawn(_batch_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for r in range(2):
        for name, got in torch.load(tmp_path / f"rank{r}.pt").items():
            terms, grads = want[name]
            a, b = got["rows"]
            for k, v in terms.items():
                assert torch.allclose(got["terms"][k], v[a:b].detach(), atol=1e-6), (name, r, k)
            assert sum(int(g.abs().sum() > 0) for g in grads) >= 4      # the encoder's weights get gradient
            for g, w in zip(got["grads"], grads):
                assert torch.allclose(g, w, rtol=1e-5, atol=1e-5), name


def test_models_with_per_rank_batch_statistics_are_refused_under_torchrun():
    # catches: a FactorVAE or an EMA VQ-VAE silently training on each process's share of the batch
    from vgm.errors import VgmError
    from vgm.models.factorvae import FactorVAE
    from vgm.models.vqvae import VQVAE
    from vgm.train import TrainConfig, check_world
    data = vgm.data.load("digits")
    cfg = TrainConfig(batch_size=64)
    for model in (FactorVAE(input_shape=data.shape, arch="mlp"), VQVAE(input_shape=data.shape, ema=True)):
        check_world(cfg, data, World(0, 1), model)                          # one process: fine
        with pytest.raises(VgmError, match="cannot train under torchrun yet"):
            check_world(cfg, data, World(0, 2), model)
    check_world(cfg, data, World(0, 2), VQVAE(input_shape=data.shape))      # without --ema: fine


def test_a_batch_that_does_not_divide_is_one_line(tmp_path):
    r = torchrun("train", "ae", "--hidden", "8", "--batch-size", "63", "--epochs", "1", "--quiet",
                 "--out", tmp_path / "r")
    assert r.returncode != 0
    assert "must divide evenly over the 2 processes" in r.stderr
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_a_killed_worker_is_restarted_from_the_last_checkpoint(tmp_path):
    # torchrun --max-restarts restarts the group; the restarted ranks resume from checkpoint.safetensors and the
    # run ends with the weights of an uninterrupted one
    args = [*AE, "--epochs", "6"]
    ref = torchrun("train", *args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=5",
           "-m", "vgm", "train", *args, "--out", str(out)]
    log = open(tmp_path / "torchrun.log", "w")          # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not _epochs_done(out) >= 2:
            time.sleep(0.2)
        assert _epochs_done(out) >= 2, "training did not reach its second checkpoint"
        workers = _children_running_vgm(proc.pid)
        assert workers, "no worker process found"
        os.kill(workers[-1], signal.SIGKILL)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    err = (tmp_path / "torchrun.log").read_text()
    assert proc.returncode == 0, err[-3000:]
    a, b = weights(tmp_path / "ref"), weights(out)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert not (out / ".vgm-replaced").exists()


def _epochs_done(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _children_running_vgm(pid: int) -> list[int]:
    """The worker processes of a torchrun launch (children of its agent that run vgm)."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and " vgm " in f" {cmd} " and "torch.distributed.run" not in cmd:
            found.append(int(p.name))
    return sorted(found)
