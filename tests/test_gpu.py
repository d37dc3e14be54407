"""Training on a GPU: each test runs on the CPU everywhere (so its logic is checked in CI) and on CUDA where a GPU is
present (marked `gpu`, skipped without one: `pytest -m gpu` runs only the GPU cases)."""
from __future__ import annotations

import json

import pytest
import torch

import vgm
from vgm.cli import main
from vgm.data import load as load_data
from vgm.train import TrainConfig, fit

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                        reason="needs a CUDA GPU")])
DEVICES = ["cpu", CUDA]


def small_vae() -> vgm.VAE:
    torch.manual_seed(0)
    return vgm.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("device", DEVICES)
def test_training_on_the_device_resumes_exactly_and_loads_on_a_cpu(tmp_path, device):
    # catches: a finite check that stacks Adam's step counters with the device's weights (every GPU run crashed at
    # epoch 1 once), generators or binarization noise on the wrong device, a resume that differs on the device,
    # a checkpoint or best model that cannot be read back on a CPU
    data = load_data("digits", binarize="dynamic")
    cfg = dict(batch_size=100, seed=3, device=device)
    full = small_vae()
    fit(full, data, TrainConfig(epochs=3, **cfg), run_dir=tmp_path / "full", progress=False)
    assert next(full.parameters()).device.type == device
    part = small_vae()
    fit(part, data, TrainConfig(epochs=2, **cfg), run_dir=tmp_path / "part", progress=False)
    again = small_vae()
    fit(again, data, TrainConfig(epochs=3, **cfg), run_dir=tmp_path / "part", resume=True, progress=False)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "train_seconds")}
    assert [strip(r) for r in rows(tmp_path / "part")] == [strip(r) for r in rows(tmp_path / "full")]
    for a, b in zip(full.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    on_cpu = vgm.load(tmp_path / "full")                          # the best epoch's weights, read on a CPU
    assert next(on_cpu.parameters()).device.type == "cpu"
    x = data.test[:64]
    want = full.eval().encode(x.to(device)).mean.cpu()
    assert torch.allclose(on_cpu.encode(x).mean, want, atol=1e-5)


@pytest.mark.parametrize("device, precision", [("cpu", "bf16"), pytest.param("cuda", "bf16", marks=CUDA.marks),
                                               pytest.param("cuda", "fp16", marks=CUDA.marks)])
def test_mixed_precision_trains_near_fp32_and_evaluates_in_fp32(tmp_path, device, precision):
    # catches: weights stored in half precision, fp16 without a working gradient scaler (its first steps overflow
    # and the run stops as NaN or lands far off), an evaluation that follows an enclosing autocast
    data = load_data("digits")
    runs = {}
    for p in ("fp32", precision):
        model = small_vae()
        fit(model, data, TrainConfig(epochs=3, batch_size=100, seed=2, device=device, precision=p),
            run_dir=tmp_path / p, progress=False)
        runs[p] = model
        assert all(q.dtype == torch.float32 for q in model.parameters())
    val = {p: rows(tmp_path / p)[-1]["val"]["elbo"] for p in runs}
    assert abs(val[precision] - val["fp32"]) < 0.02 * abs(val["fp32"]), val
    model, x = runs[precision], data.test.to(device)
    torch.manual_seed(0)
    plain = vgm.evaluate(model, x, iw_samples=10)
    torch.manual_seed(0)
    with torch.autocast(device, dtype=torch.float16 if precision == "fp16" else torch.bfloat16):
        inside = vgm.evaluate(model, x, iw_samples=10)
    assert inside["elbo"] == pytest.approx(plain["elbo"], rel=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_streamed_batches_reach_the_device(tmp_path, capsys, png_folder, device):
    # catches: streamed batches left on the CPU beside device weights (a device mismatch at the first step), or
    # pinned / non-blocking copies read before they land (wrong numbers: the run would drift from in-memory's)
    base = ["train", "vae", "--data", str(png_folder), "--latent-dim", "2", "--hidden", "16", "--epochs", "2",
            "--device", device, "--quiet"]
    assert main([*base, "--out", str(tmp_path / "mem")]) == 0
    code = main([*base, "--memory-limit", "1K", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "disk")])
    assert code == 0, capsys.readouterr().err
    mem, disk = rows(tmp_path / "mem"), rows(tmp_path / "disk")
    # on a CPU both shuffle with the same generator and agree exactly; on a GPU the in-memory shuffle draws on the
    # device's generator, so the orders differ and the runs agree only as two shuffles of one training do
    tol = 1e-5 if device == "cpu" else 0.05
    for a, b in zip(mem, disk):
        assert b["val"]["elbo"] == pytest.approx(a["val"]["elbo"], rel=tol)
