"""The reproduction table of docs/bounds.md: tighter bounds and richer posteriors / priors against the plain VAE,
and the signal-to-noise ratio of the encoder's gradient against K (standard IWAE estimator vs DReG).

Every model gets the same budget: the IWAE paper's 1-layer MLP sizes (784-200-200-50; hvae2 their 2-layer
100-100-100 / 50-50-50), dynamic binarisation, `--epochs` epochs of Adam (batch 20, lr 1e-3) with the
validation-selected epoch kept (vgm train), then the test log p(x) by `vgm evaluate --iw-samples K`, and the
same estimate on the first --train-examples training digits (overfitting: train vs test). Runs already in
--out are reused (delete a run folder to retrain it); a finished shorter run is resumed to --epochs.

    python benchmarks/bounds.py --data-dir ../shared/data/mnist10k --epochs 50 --iw-samples 5000
    python benchmarks/bounds.py --models vae,iwae50 --epochs 5 --iw-samples 100      # a quick look
    python benchmarks/bounds.py --snr-only --out runs/bounds                          # the figure alone
    python benchmarks/bounds.py --report-seeds runs/bounds-s0,runs/bounds-s1,runs/bounds-s2   # mean ± sd over seeds

Writes OUT/results.json, prints a markdown table, and draws OUT/snr.png (the figure of docs/bounds.md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

# name -> (vgm model, options, the paper's NLL on full MNIST, the paper's baseline NLL, source)
MLP = ["--hidden", "200,200", "--latent-dim", "50"]
MODELS = {
    "vae":         ("vae", MLP, 86.76, 86.76, "Burda et al. 2016, Table 1, 1 layer, VAE k=1"),
    "iwae5":       ("iwae", MLP + ["--k", "5"], 85.54, 86.76, "Burda et al. 2016, Table 1, IWAE k=5"),
    "iwae50":      ("iwae", MLP + ["--k", "50"], 84.78, 86.76, "Burda et al. 2016, Table 1, IWAE k=50"),
    "iwae50-dreg": ("iwae", MLP + ["--k", "50", "--estimator", "dreg"], None, None, "Tucker et al. 2019 (figures only)"),
    "miwae8x8":    ("iwae", MLP + ["--m", "8", "--k", "8"], 84.97, None,
                    "Rainforth et al. 2018 (Pythae's reproduction: 85.09)"),
    "vamp":        ("vamp", MLP + ["--pseudo-inputs", "500"], 85.57, 88.56,
                    "Tomczak & Welling 2018, Table 2, VAE L=1 (Pythae: 85.79)"),
    "iaf":         ("iaf", MLP, None, None, "Kingma et al. 2016 report only convolutional models on MNIST"),
    "vae-flow":    ("vae", MLP + ["--prior", "flow"], None, None, "no paper number for this architecture"),
    "vae-mc-kl":   ("iwae", MLP + ["--k", "1"], None, None, "control: the VAE on the one-sample KL estimate, "
                    "the KL that vamp, iaf and vae-flow must use"),
    "hvae2":       ("hvae2", [], 85.33, 86.76, "Burda et al. 2016, Table 1, 2 layers, VAE k=1"),
    "hvae2-iw50":  ("hvae2", ["--k", "50"], 82.90, 86.76, "Burda et al. 2016, Table 1, 2 layers, IWAE k=50"),
}
SNR_K = (1, 3, 10, 30, 100, 300, 1000)


def vgm_command(*args: str, threads: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-m", "vgm", *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"vgm {' '.join(args)} failed:\n{r.stderr}")
    return r


def finished(run: Path, epochs: int) -> bool:
    metrics = run / "metrics.jsonl"
    return (run / "model.json").exists() and metrics.exists() and len(metrics.read_text().splitlines()) >= epochs


def train_and_evaluate(name: str, a: argparse.Namespace) -> dict:
    """Train one model (or reuse its finished run), then score it on test (CLI) and on a training subset (API)."""
    from vgm.train import selection_score
    kind, options, paper, paper_base, source = MODELS[name]
    run = a.out / name
    row = {"model": name, "kind": kind, "options": " ".join(options), "paper_nll": paper,
           "paper_baseline_nll": paper_base, "source": source}
    train_args = ["train", kind, *options, "--data", "mnist", "--data-dir", str(a.data_dir), "--binarize", "dynamic",
                  "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--seed", str(a.seed), "--out", str(run), "--quiet"]
    row["train_command"] = "vgm " + " ".join(train_args)
    if not finished(run, a.epochs):
        seconds = run / "train_seconds"
        resume = (run / "checkpoint.safetensors").exists() and seconds.exists()    # a shorter finished run
        before = float(seconds.read_text()) if resume else 0.0
        t0 = time.perf_counter()
        vgm_command(*train_args, "--resume" if resume else "--force", threads=a.threads)
        seconds.write_text(f"{before + time.perf_counter() - t0:.1f}\n")
    row["train_seconds"] = float((run / "train_seconds").read_text()) if (run / "train_seconds").exists() else None
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda r: selection_score(r["val"]))          # the epoch vgm train kept
    row.update(best_epoch=best["epoch"], val_elbo=best["val"]["elbo"], train_elbo_last=history[-1]["train"]["elbo"])
    t0 = time.perf_counter()
    res = json.loads(vgm_command("evaluate", str(run), "--iw-samples", str(a.iw_samples), "--json", "--quiet",
                                 threads=a.threads).stdout)
    row.update(test_log_px=res["log_px"], test_elbo=res["elbo"], test_kl=res["kl"], active_units=res["active_units"],
               latent_dim=res["latent_dim"], eval_seconds=round(time.perf_counter() - t0, 1))
    tr = json.loads(subprocess.run([sys.executable, __file__, "--score-train", str(run), "--iw-samples",
                                    str(a.iw_samples), "--train-examples", str(a.train_examples)],
                                   env={**os.environ, "OMP_NUM_THREADS": str(a.threads)}, capture_output=True,
                                   text=True, check=True).stdout)
    row.update(train_log_px=tr["log_px"], train_elbo=tr["elbo"])
    return row


def score_train(run: Path, k: int, n: int) -> dict:
    """vgm.evaluate on the first n training digits of a run (binarised as `vgm evaluate --split train` does).
    Run in a fresh process by train_and_evaluate, so a long benchmark uses the vgm its runs were trained with."""
    import vgm
    from vgm.run import checked_split, run_data
    model = vgm.load(run)
    x = checked_split(model, run_data(run, None)[1], "train")[:n]
    torch.manual_seed(0)
    return vgm.evaluate(model, x, k)


def small_model() -> tuple[torch.nn.Module, torch.Tensor]:
    """The small model of tests/test_bounds_models.py (6 Gaussian values, 2 latent dimensions, 8 hidden units,
    random weights) and one data point: K up to 1000 reaches the regime where Rainforth et al.'s rates hold."""
    from vgm.models import IWAE
    torch.manual_seed(0)
    model = IWAE(input_shape=(6,), latent_dim=2, hidden=(8,), likelihood="gaussian", sigma=0.5).double()
    return model, torch.randn(1, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def gradient_snr(model, x: torch.Tensor, ks, draws: int, seed: int) -> dict:
    """Per K and estimator: the mean over parameters of |E g| / sd(g) for the encoder's and the decoder's
    gradient of the K-sample bound summed over x, from `draws` independent gradient draws."""
    from vgm.models.iwae import iw_terms
    groups = {"encoder": [p for n, p in model.named_parameters() if n.startswith("encoder")],
              "decoder": [p for n, p in model.named_parameters() if n.startswith(("decoder", "likelihood"))]}
    out: dict = {}
    for est in ("standard", "dreg"):
        for k in ks:
            torch.manual_seed(seed)
            rows = []
            for _ in range(draws):
                grads = torch.autograd.grad(iw_terms(model, x, k, 1, est)["loss"].sum(),
                                            groups["encoder"] + groups["decoder"])
                rows.append(torch.cat([g.reshape(-1) for g in grads]))
            g = torch.stack(rows)
            n_enc = sum(p.numel() for p in groups["encoder"])
            for part, cols in (("encoder", g[:, :n_enc]), ("decoder", g[:, n_enc:])):
                sd = cols.std(0)
                live = sd > 0
                out[f"{est}/{part}/{k}"] = (cols.mean(0)[live].abs() / sd[live]).mean().item()
            print(f"  SNR K={k:5d} {est:8s} encoder {out[f'{est}/encoder/{k}']:.4f} "
                  f"decoder {out[f'{est}/decoder/{k}']:.4f}", file=sys.stderr)
    return out


def plot_snr(panels: list[tuple[dict, str]], ks, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
    for ax, (snr, title) in zip(axes, panels):
        for key, label, style in (("standard/encoder", "encoder, standard IWAE gradient", "o-"),
                                  ("dreg/encoder", "encoder, DReG", "s-"),
                                  ("standard/decoder", "decoder (the same for both)", "^--")):
            ax.plot(ks, [snr[f"{key}/{k}"] for k in ks], style, label=label)
        ax.plot(ks, [snr[f"standard/encoder/{ks[0]}"] * (ks[0] / k) ** 0.5 for k in ks], ":", color="grey",
                label="∝ 1/√K")
        ax.set(xscale="log", yscale="log", xlabel="K (importance samples)",
               ylabel="mean over parameters of |E g| / sd(g)", title=title)
        ax.title.set_fontsize(9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(path: Path, key: str, value) -> None:
    """Merge one entry into results.json (re-read first: several benchmark processes may share one --out)."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = {**results.get(key, {}), **value} if key == "rows" else value
    path.write_text(json.dumps(results, indent=1) + "\n")


def seed_table(runs: list[dict[str, dict]]) -> str:
    """The table over several seeds (one results.json rows dict per seed): each figure the mean ± the standard
    deviation over seeds. Δ vs vae is the difference of the two printed (rounded) means, so it can be checked
    by eye; its ± is the spread of the per-seed paired differences (the same seed's vae run)."""
    import statistics
    names = [n for n in MODELS if all(n in rows for rows in runs)]
    mean_sd = lambda v: (round(statistics.mean(v), 2), statistics.stdev(v) if len(v) > 1 else float("nan"))
    lines = [f"| model | test NLL ({len(runs)} seeds) | Δ vs vae | train NLL (first N) | train − test gap | "
             "best epochs | active units | paper NLL | paper Δ vs its VAE |", "|---|---|---|---|---|---|---|---|---|"]
    base = mean_sd([-rows["vae"]["test_log_px"] for rows in runs]) if "vae" in names else None
    for n in names:
        rs = [rows[n] for rows in runs]
        test, train = mean_sd([-r["test_log_px"] for r in rs]), mean_sd([-r["train_log_px"] for r in rs])
        gap = mean_sd([r["train_log_px"] - r["test_log_px"] for r in rs])
        if base and n != "vae":
            paired = mean_sd([-r["test_log_px"] + rows["vae"]["test_log_px"] for r, rows in zip(rs, runs)])
            delta = f"{test[0] - base[0]:+.2f} ± {paired[1]:.2f}"
        else:
            delta = "—"
        r0 = rs[0]
        pd = (f"{r0['paper_nll'] - r0['paper_baseline_nll']:+.2f}" if r0["paper_nll"] and r0["paper_baseline_nll"]
              and r0["paper_nll"] != r0["paper_baseline_nll"] else "—")
        units = "/".join(str(r["active_units"]) for r in rs) + f" of {r0['latent_dim']}"
        lines.append(f"| {n} | {test[0]:.2f} ± {test[1]:.2f} | {delta} | {train[0]:.2f} ± {train[1]:.2f} | "
                     f"{gap[0]:.2f} ± {gap[1]:.2f} | {', '.join(str(r['best_epoch']) for r in rs)} | {units} | "
                     f"{r0['paper_nll'] or '—'} | {pd} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["model"] == "vae"), None)
    lines = ["| model | vgm test NLL | Δ vs vae | train NLL (first N) | best epoch | active units | paper NLL | "
             "paper Δ vs its VAE | source |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nll = -r["test_log_px"]
        delta = f"{nll + base['test_log_px']:+.2f}" if base and r is not base else "—"
        pd = (f"{r['paper_nll'] - r['paper_baseline_nll']:+.2f}" if r["paper_nll"] and r["paper_baseline_nll"]
              and r["paper_nll"] != r["paper_baseline_nll"] else "—")
        paper = f"{r['paper_nll']:.2f}" if r["paper_nll"] else "—"
        lines.append(f"| {r['model']} | {nll:.2f} | {delta} | {-r['train_log_px']:.2f} | {r['best_epoch']} | "
                     f"{r['active_units']}/{r['latent_dim']} | {paper} | {pd} | {r['source']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("VGM_DATA_DIR", "../shared/data/mnist10k")))
    ap.add_argument("--out", type=Path, default=Path("runs/bounds"))
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=20, help="Burda et al.'s 20")
    ap.add_argument("--iw-samples", type=int, default=5000, help="K of the test (and train-subset) log p(x)")
    ap.add_argument("--train-examples", type=int, default=2000, help="training digits scored for train vs test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--snr-run", default="vae", help="the trained run whose gradients the SNR figure measures")
    ap.add_argument("--snr-examples", type=int, default=8, help="test digits in the minibatch of the SNR figure")
    ap.add_argument("--snr-draws", type=int, default=100, help="gradient draws per K and estimator (trained run)")
    ap.add_argument("--snr-small-draws", type=int, default=1000, help="gradient draws per K and estimator (small "
                                                                           "model)")
    ap.add_argument("--snr-only", action="store_true", help="skip the table; measure the figure from OUT/SNR_RUN")
    ap.add_argument("--no-snr", action="store_true")
    ap.add_argument("--results", default="results.json", help="file in OUT that collects the rows and the SNR")
    ap.add_argument("--report", action="store_true", help="print the table of the finished rows in OUT and stop")
    ap.add_argument("--report-seeds", default="", help="comma-separated OUT folders of runs with other --seed "
                    "values: print the table of mean ± sd over them and stop")
    ap.add_argument("--score-train", type=Path, default=None, help=argparse.SUPPRESS)     # internal: one run
    a = ap.parse_args()
    names = [n for n in a.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    torch.set_num_threads(a.threads)
    if a.score_train:
        res = score_train(a.score_train, a.iw_samples, a.train_examples)
        print(json.dumps({k: res[k] for k in ("log_px", "elbo")}))
        return
    a.out.mkdir(parents=True, exist_ok=True)
    results_path = a.out / a.results
    if a.report_seeds:
        runs = [json.loads((Path(d) / a.results).read_text())["rows"] for d in a.report_seeds.split(",")]
        print(seed_table([{n: r for n, r in rows.items() if n in names} for rows in runs]))
        return
    if a.report:
        done = json.loads(results_path.read_text())["rows"]
        print(table([done[n] for n in names if n in done]))
        return
    if not a.snr_only:
        rows = []
        for name in names:
            print(f"{name}: training / evaluating", file=sys.stderr)
            t0 = time.perf_counter()
            rows.append(train_and_evaluate(name, a))
            print(f"  done in {time.perf_counter() - t0:.0f} s: test NLL {-rows[-1]['test_log_px']:.2f}",
                  file=sys.stderr)
            rows[-1]["settings"] = {k: str(v) for k, v in vars(a).items()}
            save(results_path, "rows", {name: rows[-1]})
        print(table(rows))
    if not a.no_snr:
        import vgm
        from vgm.run import checked_split, run_data
        run = a.out / a.snr_run
        model = vgm.load(run)
        x = checked_split(model, run_data(run, None)[1], "test")[:a.snr_examples]
        t0 = time.perf_counter()
        snr = gradient_snr(model, x, SNR_K, a.snr_draws, a.seed)
        save(results_path, "snr", {"run": a.snr_run, "examples": a.snr_examples, "draws": a.snr_draws,
                                   "K": list(SNR_K), "values": snr, "seconds": round(time.perf_counter() - t0, 1)})
        t0 = time.perf_counter()
        small = gradient_snr(*small_model(), SNR_K, a.snr_small_draws, a.seed)
        save(results_path, "snr_small", {"draws": a.snr_small_draws, "K": list(SNR_K), "values": small,
                                         "seconds": round(time.perf_counter() - t0, 1)})
        plot_snr([(snr, f"trained {a.snr_run} run on {a.data_dir.name}: {a.snr_examples} test digits, "
                        f"{a.snr_draws} draws"),
                  (small, f"small model (6 values, 2 latent dims): 1 point, {a.snr_small_draws} draws")],
                 SNR_K, a.out / "snr.png")
        print(f"wrote {a.out / 'snr.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
