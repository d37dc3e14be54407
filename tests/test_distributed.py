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
