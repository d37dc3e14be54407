"""The `vgm` command line: train, evaluate, sample, reconstruct, experiment (+ verbs other modules register).

`vgm train MODEL` takes the trainer's and the data's options plus one option per field of the model's config
dataclass (e.g. VAEConfig.latent_dim -> --latent-dim), so a newly registered model is trainable at once.
Every user error ends in one line on stderr ("vgm: error: ...") and exit status 2.
"""
from __future__ import annotations

import copy
import inspect
import dataclasses
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .checkpoint import load, load_checkpoint, write_json
from .data import BINARIZE, DATA_DIR_ENV, PathOptions, load_path
from .data import load as load_data
from .errors import VgmError
from .options import Parser, add_config_arguments, finite_float, positive_int, seed
from .data import SPLIT_SEED
from .models.tcvae import TCVAE
from .registry import COMMANDS, DATASETS, EXPERIMENTS, MODELS, datasets_for, models_for
from .checkpoint import remove_stale_temporaries
from .distributed import barrier, env_world, setup
from .run import BACKUP, RUN_FILES, check_no_leftover, checked_split, read_run_config, run_data, stash_run, unstash_run
from .train import TrainConfig, fit, optimizers, resolve_device, selection_score
DATA_DEFAULTS = {"data": None, "data_dir": None, "binarize": "none", "val_fraction": 0.1}
RESUME_MAY_CHANGE = ("epochs", "data_dir", "lr")
KIND_WORDS = {"images": "images", "vectors": "vectors", "tokens": "text (token sequences)",
              "sequences": "real-valued sequences"}


def train_parser(kind: str) -> tuple[Parser, list[str], list[str]]:
    cls = MODELS[kind]
    p = Parser(prog=f"vgm train {kind}", description=next(iter((cls.__doc__ or "").strip().splitlines()),
                                                           f"train a {kind} model"))
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None, metavar="NAME|PATH",
                   help=f"a data set: {', '.join(datasets_for(kind))} (default: {cls.default_data}); or your own "
                        "data: an image folder, a .npy/.npz array or a .csv/.tsv table")
    d.add_argument("--data-dir", default=None, help=f"where the data are: an MNIST-layout folder, or the file of a file-based dataset (or set {DATA_DIR_ENV})")
    d.add_argument("--binarize", choices=BINARIZE, default=None, help="binarisation of the images (default: none)")
    d.add_argument("--val-fraction", type=finite_float, default=None, help="share of training data held out for validation (default: 0.1)")
    path_fields = add_config_arguments(p.add_argument_group("your own data (--data PATH)"), PathOptions)
    t = p.add_argument_group("training")
    train_fields = add_config_arguments(t, TrainConfig)
    m = p.add_argument_group(f"model ({kind})")
    model_fields = add_config_arguments(m, cls.Config)
    p.add_argument("--out", default=None, help=f"run folder (default: runs/{kind}-<data>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--nproc", type=positive_int, default=None,
                   help="train with N processes on this machine: runs `torchrun --standalone --nproc-per-node N "
                        "-m vgm train ...` (for several machines, call torchrun yourself)")
    p.set_defaults(path_fields=path_fields)
    return p, train_fields, model_fields


def launch(nproc: int, argv: list[str]) -> int:
    """`vgm train ... --nproc N`: the same command under torch.distributed.run (torchrun) with N processes."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    if nproc == 1:
        return cmd_train(rest)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "vgm", "train", *rest])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        run(args)
    except ChildFailedError:
        raise VgmError("a training process failed (its message is above); the run folder keeps what the "
                       "last finished epoch wrote") from None
    return 0


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
    cls = MODELS[kind]
    if a.nproc is not None and env_world().size == 1:
        return launch(a.nproc, argv)
    out = Path(a.out or f"runs/{kind}-{Path(given.get('data', cls.default_data)).stem}")
    path_options = {k: given[k] for k in a.path_fields if k in given and given[k] is not False}
    world = env_world()
    restarted = world.distributed and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    leftover = out / BACKUP if restarted and a.force else None
    if restarted:                  # torchrun restarted the group after a failure: continue from the checkpoint
        a.resume, a.force = True, False
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
                               "keeps its configuration (only --epochs, --lr and --data-dir may change)")
        data_cfg = {**cfg["data"], **({"data_dir": given["data_dir"]} if "data_dir" in given else {})}
        train_cfg = TrainConfig(**{**cfg["train"], **{k: given[k] for k in ("epochs", "lr") if k in given}})
        model_cfg = cfg["model"]
    else:
        present = [f for f in RUN_FILES if (out / f).exists()]
        if present and not a.force:
            raise VgmError(f"{out} already holds a run ({present[0]}); use --resume to continue it, "
                           "--force to replace it, or another --out")
        data_cfg = {**DATA_DEFAULTS, "data": cls.default_data, **data_given, "options": path_options}
        train_cfg = TrainConfig(**{k: given[k] for k in train_fields if k in given})
        model_cfg = {k: given[k] for k in model_fields if k in given}
    if out.is_dir() and leftover is None:
        check_no_leftover(out)
    if a.resume:
        splits = run_data(out, given.get("data_dir"), train_cfg.workers)[1]
    else:
        splits = load_data(data_cfg["data"], data_cfg["data_dir"], data_cfg["binarize"], data_cfg["val_fraction"],
                           workers=train_cfg.workers, **path_options)
        for key in ("source", "standardize", "classes"):        # what the run folder keeps of data from a path
            if key in splits.meta:
                data_cfg[key] = splits.meta[key]
    if splits.kind not in cls.data_kinds:
        fit_models = models_for(splits.kind)
        raise VgmError(f"{data_cfg['data']} is {KIND_WORDS.get(splits.kind, splits.kind)}: "
                       f"train {' or '.join(fit_models) if fit_models else 'another model'} "
                       f"({kind} takes {' or '.join(KIND_WORDS[k] for k in cls.data_kinds)})")
    device = resolve_device(train_cfg.device)
    world = setup(device)          # under torchrun: join the group (every rank checks before rank 0 writes)
    torch.manual_seed(train_cfg.seed)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    if not a.resume:                 # options that suit the data (a table: gaussian), unless the user chose
        model_cfg = {**{k: v for k, v in splits.meta.get("defaults", {}).items() if k in fields}, **model_cfg}
    data_fields = {"input_shape": splits.shape, "dataset_size": len(splits.train), **splits.meta}
    from_data = {k: v for k, v in data_fields.items() if k in fields}
    clash = {k: v for k, v in from_data.items()
             if not a.resume and k in model_cfg and json.loads(json.dumps(model_cfg[k])) != json.loads(json.dumps(v))}
    if clash:
        k, v = next(iter(clash.items()))
        raise VgmError(f"--{k.replace('_', '-')} is set by the data ({data_cfg['data']}: {v}); leave it out")
    try:
        model = cls(cls.Config(**{**model_cfg, **from_data}))
    except (TypeError, ValueError, ArithmeticError) as e:
        raise VgmError(f"bad model option: {e}") from None
    check_support(model, splits, data_cfg["data"])
    ckpt = out / "checkpoint.safetensors"
    from_checkpoint = a.resume and ckpt.exists()   # a run killed before its first checkpoint restarts from epoch 0
    if from_checkpoint:                             # check it fully before anything is written
        probe = copy.deepcopy(model)
        load_checkpoint(ckpt, probe, [o for o in optimizers(probe, train_cfg, env_world()) if o is not None])
    barrier(world)
    if not world.main:             # rank 0 alone changes the run folder
        history = fit(model, splits, train_cfg, run_dir=out, resume=from_checkpoint, progress=False)
        return 0
    if out.is_dir():
        remove_stale_temporaries(out)
    backup = stash_run(out) if a.force else leftover if leftover is not None and leftover.exists() else None
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not a.resume:
            write_json(out / "config.json", {
                "vgm_version": __version__, "kind": kind, "data": data_cfg,
                "train": dataclasses.asdict(train_cfg),
                "model": json.loads(json.dumps(dataclasses.asdict(model.config)))})
        elif (train_cfg.epochs, train_cfg.lr) != (cfg["train"]["epochs"], cfg["train"]["lr"]):
            cfg["train"].update(epochs=train_cfg.epochs, lr=train_cfg.lr)
            write_json(out / "config.json", cfg)
        if not a.quiet:
            n_params = sum(p.numel() for p in model.parameters())
            procs = f", {world.size} processes" if world.distributed else ""
            default = "" if "data" in data_given or a.resume else " (its default data set; --data to choose)"
            print(f"{kind} ({n_params:,} parameters) on {data_cfg['data']}{default} {tuple(splits.shape)}: "
                  f"{len(splits.train)} train / {len(splits.val)} val examples, device {device}{procs}, "
                  f"run folder {out}", file=sys.stderr)
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
            raise VgmError(f"{getattr(e, 'reason', e)}; {note}") from None
        raise
    if backup is not None:
        shutil.rmtree(backup)
    if history:
        best = max(history, key=lambda r: selection_score(r["val"]))
        print(f"done: best validation epoch {best['epoch']}: " +
              ", ".join(f"{k} {v:.3f}" for k, v in best["val"].items()) + f"; model in {out}")
        if model.training_note:                 # the model's own word on its logged numbers (vgm.base.Model)
            print("  " + model.training_note.replace("{run}", str(out)))
    return 0


UNIT_INTERVAL = {"bernoulli": "bernoulli", "continuous-bernoulli": "continuous Bernoulli",
                 "logistic": "discretised logistic", "bce": "binary cross-entropy"}


def check_support(model, splits, name: str) -> None:
    """Refuse a likelihood that is not a density on the data's support: Bernoulli-type likelihoods (and an AE's
    cross-entropy) need values in [0, 1]; a model trained anyway reports meaningless, even positive, 'ELBOs'."""
    c = model.config
    lik = getattr(c, "likelihood", None) if getattr(c, "likelihood", None) in UNIT_INTERVAL else \
        getattr(c, "recon_loss", None) if getattr(c, "recon_loss", None) in UNIT_INTERVAL else None
    if lik is None or splits.streamed or splits.train.dtype == torch.long:    # streamed: 8-bit images in [0, 1]
        return
    lo, hi = float(splits.train.min()), float(splits.train.max())
    if lo < 0 or hi > 1:
        flag = "--likelihood gaussian" if hasattr(c, "likelihood") else "--recon-loss mse"
        raise VgmError(f"{name} has values in [{lo:.3g}, {hi:.3g}], outside [0, 1], where a "
                       f"{UNIT_INTERVAL[lik]} likelihood is no density; use {flag}")


def cmd_evaluate(argv: list[str]) -> int:
    from .evaluate import evaluate
    p = Parser(prog="vgm evaluate", description="ELBO, its terms, and the importance-weighted log p(x) of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--iw-samples", type=int, default=None,
                   help="K for the importance-weighted bound, 0 to skip (default: the model's, e.g. 1000 for "
                        "vae, 50 for the convolutional dSprites models, none for flows)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--data-dir", default=None, help="where the run's data now are, if moved")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.iw_samples is not None and a.iw_samples < 0:
        raise VgmError("--iw-samples must be >= 0")
    device = resolve_device(a.device)
    model = load(a.run_dir, device)
    k = model.default_iw_samples if a.iw_samples is None else a.iw_samples
    _, splits = run_data(a.run_dir, a.data_dir)
    x = checked_split(model, splits, a.split).to(device)
    y = split_labels(model, splits, a.split)
    torch.manual_seed(a.seed)
    scores = evaluate(model, x, k, a.batch_size, progress=not a.quiet, labels=y)
    res = {"run": str(a.run_dir), "kind": model.kind, "split": a.split, **scores}
    if isinstance(model, TCVAE):
        res.update(tc_decomposition(model, x, splits.train, a.batch_size))
    std = splits.meta.get("standardize")
    if std is not None and res.get("log_px") is not None:     # densities of the table's own units
        shift = -float(np.log(np.asarray(std["std"], dtype=np.float64)).sum())
        res.update(elbo_original_units=res["elbo"] + shift, log_px_original_units=res["log_px"] + shift,
                   units={**res.get("units", {}), "elbo_original_units": "nats", "log_px_original_units": "nats"})
    if a.json:
        finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v
        print(json.dumps({k: finite(v) for k, v in res.items()}, allow_nan=False))
        return 0
    units = {**scores.get("units", {}), **res.get("units", {})}
    what = units.get("dims", "values")
    print(f"{a.run_dir} ({model.kind}) on the {a.split} split: {res['n_examples']} examples of {res['dims']} {what}")
    for key, v in res.items():
        if key in ("n_examples", "dims", "iw_samples") or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        label = f"log_px (K={res['iw_samples']})" if key == "log_px" and res.get("iw_samples") else key
        number = f"{v:10d}" if isinstance(v, int) else f"{v:10.4f}"
        print(f"  {label:<20} {number} {units.get(key, '')}".rstrip())
    if "note" in res:
        print(f"  note: {res['note']}")
    return 0


class original_units:
    """Maps a run's model values back to its data's units (a table's standardisation), with the column names;
    the identity for other data."""

    def __init__(self, run_dir: Path):
        self.standardize = read_run_config(run_dir)["data"].get("standardize")
        self.columns = None if self.standardize is None else self.standardize["columns"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from .data import unstandardize
        return x if self.standardize is None else unstandardize(x, self.standardize)


def split_labels(model, splits, split: str) -> torch.Tensor | None:
    """The labels of a split for a conditional model (None for the others)."""
    if not getattr(model, "conditional", False):
        return None
    y = getattr(splits, f"{split}_labels")
    if y is None:
        raise VgmError(f"{model.kind} is conditioned on labels, and the {split} split has none")
    return y


TC_POOL = 10000     # training examples whose posteriors make up q(z) in `vgm evaluate` of a β-TCVAE


def tc_decomposition(model, x: torch.Tensor, train: torch.Tensor, batch_size: int) -> dict:
    """β-TCVAE's KL = mi + tc + dwkl, estimated against the aggregate posterior of (up to TC_POOL) training
    examples as the mixture q(z) = (1/N) Σ_n q(z|x_n), not by the minibatch estimator of the training rows."""
    from .models.tcvae import decomposition
    pool = train
    if len(train) > TC_POOL:
        pool = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))[:TC_POOL]]
    parts = decomposition(model, x, pool.to(x.device), batch_size)
    out = {k: v.mean().item() for k, v in parts.items()}
    out["units"] = {"mi": "nats", "tc": "nats", "dwkl": "nats", "tc_pool": "training examples"}
    out["tc_pool"] = len(pool)
    return out


def cmd_sample(argv: list[str]) -> int:
    from .plots import save_examples
    p = Parser(prog="vgm sample", description="draw n samples from the model: a grid of images, a scatter of 2-D "
                                              "points, a CSV of vectors, or text")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=positive_int, default=64)
    p.add_argument("--temperature", type=finite_float, default=1.0,
                   help="spread of the latent (or a flow's base) draws: z = T·ε; T < 1 gives more typical samples")
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN_DIR/samples.png, or .csv "
                                                          "for vectors of more than 2 values)")
    p.add_argument("--label", type=int, default=None, help="the class to draw, for a model conditioned on labels")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if not a.temperature > 0:
        raise VgmError(f"--temperature must be > 0, got {a.temperature}")
    model = load(a.run_dir, resolve_device(a.device))
    units = original_units(a.run_dir)
    torch.manual_seed(a.seed)
    params = inspect.signature(model.sample).parameters
    kw = {}
    if a.label is not None:
        if not getattr(model, "conditional", False):
            raise VgmError(f"{model.kind} is not conditioned on labels: leave out --label")
        kw["label"] = a.label
    if "temperature" in params:
        kw["temperature"] = a.temperature
    elif a.temperature != 1.0:
        raise VgmError(f"{model.kind} models do not sample at a temperature")
    x = model.sample(a.n, **kw)
    out = a.out or a.run_dir / ("samples.csv" if x.dim() == 2 and x.shape[1] != 2 and x.is_floating_point()
                                else "samples.png")
    if hasattr(model, "render_samples"):
        model.render_samples(x, out)
    else:
        save_examples(out, units(x), title=f"{model.kind}: {a.n} samples" +
                      (f", T = {a.temperature:g}" if a.temperature != 1 else ""), columns=units.columns)
    print(f"wrote {out}")
    return 0


def cmd_reconstruct(argv: list[str]) -> int:
    from .plots import save_examples
    p = Parser(prog="vgm reconstruct", description="test examples and their reconstructions from the posterior "
                                                   "mean: images in row pairs, 2-D points joined by lines, "
                                                   "vectors as a CSV, text side by side")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-n", type=positive_int, default=32, help="number of examples")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN_DIR/reconstructions.png, "
                                                          "or .csv for vectors of more than 2 values)")
    p.add_argument("--data-dir", default=None, help="where the run's data now are, if moved")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    model = load(a.run_dir, device)
    _, splits = run_data(a.run_dir, a.data_dir)
    x = checked_split(model, splits, a.split)[:a.n].to(device)
    recon = model.reconstruct(x)
    units = original_units(a.run_dir)
    if hasattr(model, "render_reconstructions"):
        out = a.out or a.run_dir / "reconstructions.png"
        model.render_reconstructions(x, recon, out)
    else:
        out = a.out or a.run_dir / ("reconstructions.csv" if x.dim() == 2 and x.shape[1] != 2 else "reconstructions.png")
        save_examples(out, units(x), units(recon), columns=units.columns,
                      title=f"{model.kind}: {len(x)} {a.split} examples and their reconstructions")
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
    taking = sorted(n for n, fn in EXPERIMENTS.items() if fn.takes_data)
    p.add_argument("--data", default=None, metavar="PATH",
                   help=f"your own images (a folder or a .npy/.npz array) instead of the digits: {', '.join(taking)}")
    path_fields = add_config_arguments(p.add_argument_group("your own data (--data PATH)"), PathOptions)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    from .experiments.common import PROGRESS
    PROGRESS["on"] = not a.quiet
    names = sorted(EXPERIMENTS) if a.name == "all" else [a.name]
    options = {k: getattr(a, k) for k in path_fields if getattr(a, k) not in (None, False)}
    if options and a.data is None:
        raise VgmError(f"--{next(iter(options)).replace('_', '-')} applies to --data PATH, which was not given")
    user_data = None
    if a.data is not None:
        if a.name != "all" and not EXPERIMENTS[a.name].takes_data:
            raise VgmError(f"experiment {a.name} runs on its own data only; --data PATH is taken by "
                           f"{', '.join(taking)}")
        user_data = load_path(a.data, **options)
        labelled = user_data.train_labels is not None and user_data.test_labels is not None
        if user_data.kind != "images":
            raise VgmError(f"{a.data}: the experiments draw image grids, and these data are {user_data.kind} "
                           f"of shape {user_data.shape}; train on them with `vgm train`")
        if user_data.streamed:
            raise VgmError(f"{a.data}: larger than --memory-limit; an experiment holds its data in memory (raise "
                           "--memory-limit, or use --image-size to make the images smaller)")
        runnable = [n for n in names if EXPERIMENTS[n].takes_data == "images"
                    or (EXPERIMENTS[n].takes_data == "labelled images" and labelled)]
        if not runnable:
            raise VgmError(f"experiment {a.name} needs class labels to train its sample classifier, and {a.data} has "
                           "none (give class sub-folders, or 'y' / 'train_labels' and 'test_labels' in the .npz)")
        if len(runnable) < len(names) and not a.quiet:
            print(f"with --data: running {', '.join(runnable)} (the others need "
                  f"{'their own data' if labelled else 'their own data or class labels'})", file=sys.stderr)
        names = runnable
    for i, name in enumerate(names):
        out = a.out / name
        out.mkdir(parents=True, exist_ok=True)
        if not a.quiet:
            print(f"experiment {name}" + (f" ({i + 1}/{len(names)})" if len(names) > 1 else "") +
                  (" --quick" if a.quick else ""), file=sys.stderr, flush=True)
        torch.manual_seed(a.seed)
        extra = {"user_data": user_data} if user_data is not None else {}
        EXPERIMENTS[name](out=out, quick=a.quick, seed=a.seed, data_dir=a.data_dir, **extra)
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
