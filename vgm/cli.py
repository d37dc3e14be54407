"""The `vgm` command line: train, evaluate, sample, reconstruct, experiment (+ verbs other modules register).

`vgm train MODEL` takes the trainer's and the data's options plus one option per field of the model's config
dataclass (e.g. VAEConfig.latent_dim -> --latent-dim), so a newly registered model is trainable at once.
Every user error ends in one line on stderr ("vgm: error: ...") and exit status 2.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import torch

from . import __version__
from .checkpoint import load, load_checkpoint, write_json
from .data import BINARIZE, DATA_DIR_ENV
from .data import load as load_data
from .errors import VgmError
from .options import Parser, add_config_arguments, finite_float
from .registry import COMMANDS, DATASETS, EXPERIMENTS, MODELS
from .run import RUN_FILES, checked_split, read_run_config, run_data, stash_run, unstash_run
from .train import TrainConfig, fit, resolve_device, selection_score
DATA_DEFAULTS = {"data": "digits", "data_dir": None, "binarize": "none", "val_fraction": 0.1}
RESUME_MAY_CHANGE = ("epochs", "data_dir")


def train_parser(kind: str) -> tuple[Parser, list[str], list[str]]:
    cls = MODELS[kind]
    p = Parser(prog=f"vgm train {kind}", description=(cls.__doc__ or "").strip().splitlines()[0])
    d = p.add_argument_group("data")
    d.add_argument("--data", choices=sorted(DATASETS), default=None, help="dataset (default: digits)")
    d.add_argument("--data-dir", default=None, help=f"where the data are: an MNIST-layout folder, or the file of a file-based dataset (or set {DATA_DIR_ENV})")
    d.add_argument("--binarize", choices=BINARIZE, default=None, help="binarisation of the images (default: none)")
    d.add_argument("--val-fraction", type=finite_float, default=None, help="share of training data held out for validation (default: 0.1)")
    t = p.add_argument_group("training")
    train_fields = add_config_arguments(t, TrainConfig)
    m = p.add_argument_group(f"model ({kind})")
    model_fields = add_config_arguments(m, cls.Config)
    p.add_argument("--out", default=None, help=f"run folder (default: runs/{kind}-<data>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    return p, train_fields, model_fields


def cmd_train(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-") or argv[0] not in MODELS:
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: vgm train MODEL [options]   (MODEL: {', '.join(sorted(MODELS))}; vgm train MODEL --help)")
            return 0
        got = f" {argv[0]!r}" if argv else ""
        raise VgmError(f"unknown model{got} (choose from {', '.join(sorted(MODELS))})" if got
                       else f"vgm train needs a model: {', '.join(sorted(MODELS))}")
    kind = argv[0]
    p, train_fields, model_fields = train_parser(kind)
    a = p.parse_args(argv[1:])
    given = {k: v for k, v in vars(a).items() if v is not None}
    data_given = {k: given[k] for k in DATA_DEFAULTS if k in given}
    out = Path(a.out or f"runs/{kind}-{given.get('data', 'digits')}")
    if out.exists() and not out.is_dir():
        raise VgmError(f"--out {out} exists and is not a folder")
    if a.resume and a.force:
        raise VgmError("--resume and --force exclude each other")
    if a.resume:
        cfg = read_run_config(out)
        if cfg["kind"] != kind:
            raise VgmError(f"{out} holds a {cfg['kind']!r} run, not {kind!r}")
        stored = {**cfg["data"], **cfg["train"], **cfg["model"]}
        for k, v in given.items():
            if k in stored and k not in RESUME_MAY_CHANGE and json.loads(json.dumps(v)) != stored[k]:
                raise VgmError(f"--{k.replace('_', '-')} {v} differs from the run's {stored[k]}; a resumed run "
                               "keeps its configuration (only --epochs and --data-dir may change)")
        data_cfg = {**cfg["data"], **({"data_dir": given["data_dir"]} if "data_dir" in given else {})}
        train_cfg = TrainConfig(**{**cfg["train"], **({"epochs": given["epochs"]} if "epochs" in given else {})})
        model_cfg = cfg["model"]
    else:
        present = [f for f in RUN_FILES if (out / f).exists()]
        if present and not a.force:
            raise VgmError(f"{out} already holds a run ({present[0]}); use --resume to continue it, "
                           "--force to replace it, or another --out")
        data_cfg = {**DATA_DEFAULTS, **data_given}
        train_cfg = TrainConfig(**{k: given[k] for k in train_fields if k in given})
        model_cfg = {k: given[k] for k in model_fields if k in given}
    splits = load_data(data_cfg["data"], data_cfg["data_dir"], data_cfg["binarize"], data_cfg["val_fraction"])
    device = resolve_device(train_cfg.device)
    torch.manual_seed(train_cfg.seed)
    cls = MODELS[kind]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    from_data = {k: v for k, v in {"input_shape": splits.shape, **splits.meta}.items() if k in fields}
    clash = {k: v for k, v in from_data.items()
             if not a.resume and k in model_cfg and json.loads(json.dumps(model_cfg[k])) != json.loads(json.dumps(v))}
    if clash:
        k, v = next(iter(clash.items()))
        raise VgmError(f"--{k.replace('_', '-')} is set by the data ({data_cfg['data']}: {v}); leave it out")
    try:
        model = cls(cls.Config(**{**model_cfg, **from_data}))
    except (TypeError, ValueError, ArithmeticError) as e:
        raise VgmError(f"bad model option: {e}") from None
    ckpt = out / "checkpoint.safetensors"
    from_checkpoint = a.resume and ckpt.exists()   # a run killed before its first checkpoint restarts from epoch 0
    if from_checkpoint:                             # check it fully before anything is written
        probe = copy.deepcopy(model)
        load_checkpoint(ckpt, probe, torch.optim.Adam(probe.parameters()))
    backup = stash_run(out) if a.force else None
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not a.resume:
            write_json(out / "config.json", {
                "vgm_version": __version__, "kind": kind, "data": data_cfg,
                "train": dataclasses.asdict(train_cfg),
                "model": json.loads(json.dumps(dataclasses.asdict(model.config)))})
        elif train_cfg.epochs != cfg["train"]["epochs"]:
            cfg["train"]["epochs"] = train_cfg.epochs
            write_json(out / "config.json", cfg)
        if not a.quiet:
            n_params = sum(p.numel() for p in model.parameters())
            print(f"{kind} ({n_params:,} parameters) on {data_cfg['data']} {tuple(splits.shape)}: "
                  f"{len(splits.train)} train / {len(splits.val)} val examples, device {device}, run folder {out}",
                  file=sys.stderr)
        history = fit(model, splits, train_cfg, run_dir=out, resume=from_checkpoint, progress=not a.quiet)
    except BaseException as e:
        if backup is not None:
            unstash_run(out, backup)
            note = f"the previous run in {out} is restored"
        elif ckpt.exists():
            note = f"continue with: vgm train {kind} --resume --out {out}"
        else:
            note = "no epoch had finished"
            if not a.resume:                 # leave no half-made run behind: the same command can be retried
                for f in RUN_FILES:
                    (out / f).unlink(missing_ok=True)
                if created and not any(out.iterdir()):
                    out.rmdir()
        if isinstance(e, KeyboardInterrupt):
            raise VgmError(f"interrupted; {note}") from None
        if isinstance(e, VgmError) and backup is not None:
            raise VgmError(f"{e}; {note}") from None
        raise
    if backup is not None:
        shutil.rmtree(backup)
    if history:
        best = max(history, key=lambda r: selection_score(r["val"]))
        print(f"done: best validation epoch {best['epoch']}: " +
              ", ".join(f"{k} {v:.3f}" for k, v in best["val"].items()) + f"; model in {out}")
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    from .evaluate import evaluate
    p = Parser(prog="vgm evaluate", description="ELBO, its terms, and the importance-weighted log p(x) of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--iw-samples", type=int, default=1000, help="K for the importance-weighted bound (0: skip)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--data-dir", default=None, help="where the run's data now are, if moved")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    if a.iw_samples < 0 or a.batch_size < 1:
        raise VgmError("--iw-samples must be >= 0 and --batch-size >= 1")
    device = resolve_device(a.device)
    model = load(a.run_dir, device)
    _, splits = run_data(a.run_dir, a.data_dir)
    x = checked_split(model, splits, a.split).to(device)
    torch.manual_seed(a.seed)
    scores = evaluate(model, x, a.iw_samples, a.batch_size)
    res = {"run": str(a.run_dir), "kind": model.kind, "split": a.split, **scores}
    if a.json:
        finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v
        print(json.dumps({k: finite(v) for k, v in res.items()}, allow_nan=False))
    else:
        print(f"{a.run_dir} ({model.kind}) on {a.split} split: {res['n_examples']} examples of {res['dims']} values")
        for k, v in res.items():
            if k in ("n_examples", "dims", "iw_samples") or not isinstance(v, (int, float)):
                continue
            unit = "bits/dim" if k == "bits_per_dim" else "per value" if k == "mse" else "nats"
            unit = res.get("units", {}).get(k, unit)      # a model's evaluate() may name its own units
            label = f"log_px (K={a.iw_samples})" if k == "log_px" and res.get("iw_samples") else k
            print(f"  {label:<18} {v:10.4f} {unit}")
        if "note" in res:
            print(f"  note: {res['note']}")
    return 0


def cmd_sample(argv: list[str]) -> int:
    from .plots import save_samples
    p = Parser(prog="vgm sample", description="decode n prior samples into a grid")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: RUN_DIR/samples.png)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if a.n < 1:
        raise VgmError("-n must be >= 1")
    model = load(a.run_dir, resolve_device(a.device))
    torch.manual_seed(a.seed)
    x = model.sample(a.n)
    out = a.out or a.run_dir / "samples.png"
    if hasattr(model, "render_samples"):
        model.render_samples(x, out)
    else:
        save_samples(out, x)
    print(f"wrote {out}")
    return 0


def cmd_reconstruct(argv: list[str]) -> int:
    from .plots import save_reconstructions
    p = Parser(prog="vgm reconstruct", description="originals (odd rows) above their reconstructions (even rows)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=int, default=32, help="number of examples (a multiple of 8)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: RUN_DIR/reconstructions.png)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if a.n < 1 or a.n % 8:
        raise VgmError("-n must be a positive multiple of 8")
    device = resolve_device(a.device)
    model = load(a.run_dir, device)
    _, splits = run_data(a.run_dir, a.data_dir)
    x = checked_split(model, splits, a.split)[:a.n].to(device)
    out = a.out or a.run_dir / "reconstructions.png"
    if hasattr(model, "render_reconstructions"):
        model.render_reconstructions(x, model.reconstruct(x), out)
    else:
        save_reconstructions(out, x, model.reconstruct(x))
    print(f"wrote {out}")
    return 0


def cmd_experiment(argv: list[str]) -> int:
    from .experiments import load_all
    load_all()
    p = Parser(prog="vgm experiment", description="reproduce one of the field's classic claims: figures and a table")
    p.add_argument("name", choices=[*sorted(EXPERIMENTS), "all"])
    p.add_argument("--out", type=Path, default=Path("runs/experiments"), help="folder; each experiment writes OUT/NAME/")
    p.add_argument("--quick", action="store_true", help="small settings (about a minute each), for tests")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--data-dir", default=None, help=f"an MNIST-layout folder to run on as well (or set {DATA_DIR_ENV})")
    a = p.parse_args(argv)
    names = sorted(EXPERIMENTS) if a.name == "all" else [a.name]
    for name in names:
        out = a.out / name
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(a.seed)
        EXPERIMENTS[name](out=out, quick=a.quick, seed=a.seed, data_dir=a.data_dir)
        print(f"wrote {out}")
    return 0


COMMANDS.update({"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
                 "reconstruct": cmd_reconstruct, "experiment": cmd_experiment})


def main(argv: list[str] | None = None) -> int:
    import vgm  # noqa: F401  (registers every model, dataset, experiment and command)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: vgm COMMAND ...\n\ncommands: {', '.join(COMMANDS)}\n"
              f"models:   {', '.join(sorted(MODELS))}\n"
              f"datasets: {', '.join(sorted(DATASETS))}\n\n`vgm COMMAND --help` for a command's options.")
        return 0
    if argv[0] == "--version":
        print(f"vgm {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"vgm: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except VgmError as e:
        print(f"vgm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:     # unreadable or unwritable files and folders: the OS's own one-line reason
        print(f"vgm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vgm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
