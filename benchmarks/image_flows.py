"""Image flows on mnist10k in a budget of training time: test bits/dim, training and sampling throughput, and
samples at temperatures 0.5 / 0.7 / 1.0 (beside a VAE's, from a run folder); glow-cond: class-conditional Glow.

    OMP_NUM_THREADS=1 python benchmarks/image_flows.py --data-dir ../shared/data/mnist10k --minutes 10 \\
        --flows glow,realnvp-ms,glow-cond --save-dir runs/image-flows --class-figure docs/glow_conditional.png
    vgm train vae --data mnist --data-dir ../shared/data/mnist10k --epochs 30 --out runs/vae-mnist
    OMP_NUM_THREADS=1 python benchmarks/image_flows.py --data-dir ../shared/data/mnist10k --flows glow \\
        --save-dir runs/image-flows --figure-only --figure docs/glow_samples.png --vae-run runs/vae-mnist

Each flow trains with Adam (lr 1e-3, batches of 128, the model's data-dependent ActNorm init on the first batch)
until `--minutes` of process CPU time (time.process_time, all threads together, training steps only) are spent;
the validation split is scored after every epoch and at the end (outside the budget), and the best of those
weights are scored by vgm.evaluate on the whole mnist10k test split (2,000 images), with the fixed dequantization
noise of `vgm evaluate` (a conditional flow: the marginal over the labels, and given the label). CPU time, not
wall-clock time, so that other jobs on a shared machine do not shrink the budget. With --device cuda the budget is
wall time of the training steps (after a device sync), e.g. a wider glow on a GPU:

    python benchmarks/image_flows.py --data-dir DIR --device cuda --minutes 8 --set width=128 --set steps_k=16

Sampling throughput: images per second (wall and CPU) of model.sample(64). Prints a table row per flow, then JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

import vgm

FLOWS = {
    "glow": ("glow", dict(levels_l=2, steps_k=8, width=64)),
    "realnvp-ms": ("realnvp", dict(multiscale=True, scales=3, hidden=64)),
    "glow-cond": ("glow", dict(levels_l=2, steps_k=8, width=64, conditional=True)),
}
TEMPERATURES = (0.5, 0.7, 1.0)


def val_bits(model, x: torch.Tensor, labels: torch.Tensor | None) -> float:
    """bits/dim on x with vgm evaluate's fixed noise; a conditional model is scored given the labels."""
    if model.conditional:
        return vgm.evaluate(model, x, batch_size=500, labels=labels)["bits_per_dim"]
    return vgm.evaluate(model, x, batch_size=500)["bits_per_dim"]


def step_clock(device: torch.device):
    """Seconds spent by training steps: process CPU time on a CPU (other jobs do not shrink it), wall time after a
    device sync on a GPU."""
    if device.type == "cuda":
        return lambda: (torch.cuda.synchronize(), time.perf_counter())[1]
    return time.process_time


def annealed(lr: float, t: float, budget: float, warmup: float = 0.02) -> float:
    """lr warmed up linearly over the first 2% of the budget, then cosine-annealed to 0 at its end."""
    return lr * min(1.0, t / (warmup * budget)) * 0.5 * (1 + math.cos(math.pi * min(t / budget, 1.0)))


def train_in_budget(model, data, budget_s: float, batch_size: int, lr: float, seed: int, clock=time.process_time,
                    anneal: bool = False) -> dict:
    """Adam on model.loss until budget_s seconds of training steps (by `clock`); the best validation weights are
    kept. A conditional model gets each batch's labels: model.loss(x, labels). anneal: the learning rate follows
    `annealed` over the budget's clock instead of staying at lr."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    seen, steps, train_s, wall0, epoch = 0, 0, 0.0, time.perf_counter(), 0
    best, best_epoch, best_state, curve = -math.inf, 0, None, []
    while train_s < budget_s:
        model.train()
        perm = torch.randperm(len(data.train), generator=gen).to(data.train.device)
        xs, ys = data.train[perm], data.train_labels[perm]
        for xb, yb in zip(xs.split(batch_size), ys.split(batch_size)):
            t0 = clock()
            if anneal:
                opt.param_groups[0]["lr"] = annealed(lr, train_s, budget_s)
            loss = (model.loss(xb, yb) if model.conditional else model.loss(xb))["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_s += clock() - t0
            seen, steps = seen + len(xb), steps + 1
            if train_s >= budget_s:
                break
        epoch += 1
        val = val_bits(model, data.val, data.val_labels)
        curve.append((round(seen / len(data.train), 2), round(train_s, 1), round(val, 4)))
        print(f"  epoch {seen / len(data.train):6.2f}  {train_s:7.1f} s  val {val:.4f} bits/dim", flush=True)
        if not math.isfinite(val):
            break
        if -val > best:
            best, best_epoch = -val, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"train_clock_s": round(train_s, 1), "train_wall_s": round(time.perf_counter() - wall0, 1), "steps": steps,
            "epochs": round(seen / len(data.train), 2), "best_epoch": best_epoch,
            "train_images_per_s": round(seen / train_s, 1), "val_curve": curve}


@torch.no_grad()
def sampling_speed(model, n: int = 64) -> dict:
    model.eval()
    model.sample(2)                                           # warm-up
    sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
    sync()
    c0, w0 = time.process_time(), time.perf_counter()
    model.sample(n)
    sync()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"sample_images_per_s": round(n / wall, 1), "sample_images_per_cpu_s": round(n / cpu, 1)}


def save_class_figure(path: str, model, seed: int, temperature: float = 0.7, per_class: int = 12) -> None:
    """A conditional flow's samples: one row per class label, at one temperature."""
    from vgm.plots import grid, pyplot
    plt = pyplot()
    torch.manual_seed(seed)
    labels = torch.arange(model.n_classes).repeat_interleave(per_class)
    x = model.sample(len(labels), temperature=temperature, label=labels)
    fig, ax = plt.subplots(figsize=(per_class * 0.45, model.n_classes * 0.5), layout="tight")
    ax.imshow(grid(x, per_class), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{model.kind} --conditional: row k = samples given label k, T = {temperature}", fontsize=8)
    ax.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_figure(path: str, rows: list[tuple[str, object]], seed: int) -> None:
    """One row per model, one 8x8 grid per temperature."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from vgm.plots import grid

    fig, axes = plt.subplots(len(rows), len(TEMPERATURES), figsize=(3.2 * len(TEMPERATURES), 3.4 * len(rows)),
                             squeeze=False, layout="tight")
    for r, (name, model) in enumerate(rows):
        for j, t in enumerate(TEMPERATURES):
            torch.manual_seed(seed)
            x = model.sample(64, temperature=t).clamp(0, 1)
            axes[r, j].imshow(grid(x, 8), cmap="gray", vmin=0, vmax=1)
            axes[r, j].set_title(f"{name}, T = {t}", fontsize=9)
            axes[r, j].axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_curve_figure(path: str, rows: list[dict]) -> None:
    """Validation bits/dim against training time, one line per flow, the test figure of the kept weights marked."""
    from vgm.plots import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="tight")
    for row in rows:
        _, seconds, val = zip(*row["val_curve"])
        line, = ax.plot([t / 60 for t in seconds], val, lw=1, label=f"{row['flow']}: validation")
        best = min((i for i in range(len(val)) if math.isfinite(val[i])), key=val.__getitem__)
        ax.plot(seconds[best] / 60, row["test_bits_per_dim"], "o", color=line.get_color(),
                label=f"{row['flow']}: test, kept weights ({row['test_bits_per_dim']:.3f})")
    ax.set_xlabel("training minutes (process CPU time on a CPU, wall time on a GPU)")
    ax.set_ylabel("bits/dim")
    low = min(min(v for *_, v in row["val_curve"] if math.isfinite(v)) for row in rows)
    ax.set_ylim(top=min(ax.get_ylim()[1], low + 1.0))            # the first epochs' large values off the top
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data/mnist10k")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="training minutes per flow: process CPU time on a CPU, wall time on a GPU")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--flows", default="glow", help="comma-separated subset of " + ",".join(FLOWS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field of every flow (e.g. --set width=32)")
    p.add_argument("--save-dir", help="save each trained flow as a run folder DIR/NAME (vgm.load reads it)")
    p.add_argument("--figure", help="write samples at T = 0.5 / 0.7 / 1.0 of each flow (and the VAE) here")
    p.add_argument("--anneal", action="store_true",
                   help="warm the learning rate up over 2%% of the budget, then cosine-anneal it to 0 at its end")
    p.add_argument("--init-from", metavar="DIR",
                   help="start from a flow saved earlier by --save-dir (DIR/NAME) instead of a fresh one")
    p.add_argument("--curve-figure", help="write each flow's validation curve (and its test figure) here")
    p.add_argument("--class-figure", help="write a conditional flow's samples, a row per label, here")
    p.add_argument("--figure-only", action="store_true",
                   help="train nothing: draw the figure from the flows saved earlier in --save-dir")
    p.add_argument("--vae-run", help="a trained VAE run folder whose samples go beside the flows' in the figure")
    a = p.parse_args()
    device = torch.device(a.device)
    data = vgm.load_data("mnist", a.data_dir).to(device)
    where = f"{torch.cuda.get_device_name(device)}, {a.minutes:g} GPU wall-minutes" if device.type == "cuda" else \
        f"{torch.get_num_threads()} threads, {a.minutes:g} CPU-minutes"
    print(f"MNIST {tuple(data.train.shape)} train, {len(data.val)} val, {len(data.test)} test, "
          f"{data.meta['levels']} grey levels, {where} per flow")
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    rows, trained = [], []
    if a.figure_only:
        trained = [(name, vgm.load(f"{a.save_dir}/{name}").eval()) for name in a.flows.split(",")]
    for name in [] if a.figure_only else a.flows.split(","):
        kind, cfg = FLOWS[name]
        cfg = {**cfg, **overrides}
        torch.manual_seed(a.seed)
        if a.init_from:
            model = vgm.load(f"{a.init_from}/{name}").to(device)
            cfg = {k: getattr(model.config, k) for k in cfg}
        else:
            model = vgm.MODELS[kind](input_shape=data.shape, levels=data.meta["levels"], **cfg).to(device)
        print(f"{name}: {kind} {cfg}", flush=True)
        row = {"flow": name, "kind": kind, "config": cfg, "params": sum(q.numel() for q in model.parameters()),
               **train_in_budget(model, data, 60 * a.minutes, a.batch_size, a.lr, a.seed, step_clock(device),
                                  a.anneal)}
        res = model.evaluate(data.test) if model.conditional else vgm.evaluate(model, data.test, batch_size=500)
        row.update(test_log_px=round(res["log_px"], 2), test_bits_per_dim=round(res["bits_per_dim"], 4),
                   **sampling_speed(model))
        if model.conditional:
            row["test_bits_per_dim_given_label"] = round(val_bits(model, data.test, data.test_labels), 4)
        rows.append(row)
        trained.append((name, model))
        if a.save_dir:
            model.save(f"{a.save_dir}/{name}")
        print(f"{name:11s} {row['params']:>9,} params  {row['train_images_per_s']:7.1f} train img/s (CPU-s on a CPU)  "
              f"{row['sample_images_per_s']:7.1f} sampled img/s  {row['epochs']:6.2f} epochs (best {row['best_epoch']})"
              f"  test {row['test_bits_per_dim']:.4f} bits/dim", flush=True)
    if a.curve_figure and rows:
        save_curve_figure(a.curve_figure, rows)
    if a.class_figure:
        save_class_figure(a.class_figure, next(m for _, m in trained if m.conditional), a.seed)
    if a.figure:
        trained = [(n, m) for n, m in trained if not m.conditional]
        if a.vae_run:
            trained.append(("vae", vgm.load(a.vae_run).eval()))
        save_figure(a.figure, trained, a.seed)
    print(json.dumps({"minutes": a.minutes, "device": where, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
