"""The multi-node launch the README gives (`torchrun --nnodes 2 --node-rank R --rdzv-backend c10d ...`), on one
machine: two torchrun agents, one process each, meet at a c10d rendezvous on 127.0.0.1 and train what one
process trains. Bounded in time; both agents are killed if either fails."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch

import vgm

from conftest import run_cli

AE = ["ae", "--hidden", "32", "--latent-dim", "4", "--batch-size", "64", "--seed", "3", "--quiet", "--epochs", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_agents_on_one_c10d_rendezvous_train_what_one_process_trains(tmp_path):
    """Catches: a world built from the local rank or the agent's --nproc-per-node instead of the global RANK and
    WORLD_SIZE (each node would then train alone on the whole batch, or only node 0's rank would write), and a
    rendezvous that needs anything but the launcher's endpoint."""
    one = run_cli("train", *AE, "--out", tmp_path / "one", env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    port, run_id = free_port(), f"vgm-test-{os.getpid()}"
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank",
                                str(r), "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                                f"127.0.0.1:{port}", "--rdzv-id", run_id, "--max-restarts", "0",
                                "-m", "vgm", "train", *AE, "--out", str(tmp_path / "two")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
              for r in (0, 1)]
    try:
        outs = [a.communicate(timeout=240) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
    for a, (_, err) in zip(agents, outs):
        assert a.returncode == 0, err[-2000:]
    a, b = vgm.load(tmp_path / "one").state_dict(), vgm.load(tmp_path / "two").state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2                             # one writer (global rank 0), one row per epoch
