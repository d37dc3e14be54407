"""A run folder as the commands read it: its configuration, its data, and replacing it safely (--force)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import read_json
from .data import SPLIT_SEED, Splits, reload
from .data import load as load_data
from .errors import VgmError
from .train import TrainConfig

RUN_FILES = ("config.json", "model.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl")


def read_run_config(run_dir: Path) -> dict:
    """config.json of a run folder, checked to be a vgm run configuration."""
    if not run_dir.is_dir():
        raise VgmError(f"run folder {run_dir} does not exist")
    cfg = read_json(run_dir / "config.json")
    if not (isinstance(cfg, dict) and isinstance(cfg.get("kind"), str)
            and all(isinstance(cfg.get(k), dict) for k in ("data", "train", "model"))
            and {"data", "data_dir", "binarize", "val_fraction"} <= set(cfg["data"])):
        raise VgmError(f"{run_dir / 'config.json'} is not a vgm run configuration")
    try:
        TrainConfig(**cfg["train"])
    except TypeError as e:
        raise VgmError(f"{run_dir / 'config.json'} is not a vgm run configuration ({e})") from None
    return cfg


BACKUP = ".vgm-replaced"


def check_no_leftover(out: Path) -> None:
    """Refuse to touch a run folder that still holds the previous run of a --force that was killed (SIGKILL,
    power loss): deleting it would lose the user's run, restoring it silently would hide what happened."""
    backup = out / BACKUP
    if backup.exists():
        raise VgmError(f"{backup} holds the run that an interrupted --force was replacing; restore it "
                       f"(mv {backup}/* {out}/) or delete it, then run again")


def stash_run(out: Path) -> Path | None:
    """Move an existing run's files aside (restored if the new run fails, deleted when it succeeds)."""
    present = [f for f in RUN_FILES if (out / f).exists()]
    if not present:
        return None
    check_no_leftover(out)
    backup = out / BACKUP
    backup.mkdir()
    for f in present:
        os.replace(out / f, backup / f)
    return backup


def unstash_run(out: Path, backup: Path) -> None:
    for f in RUN_FILES:
        (out / f).unlink(missing_ok=True)
    for f in backup.iterdir():
        os.replace(f, out / f.name)
    backup.rmdir()


def run_data(run_dir: Path, data_dir: str | None, workers: int = 0) -> tuple[dict, Splits]:
    """A run's configuration and its data: a registered data set (from --data-dir where it moved), or the data
    it read from a path, found again from the record in config.json (at --data-dir PATH where they moved) and
    checked to be the same data."""
    cfg = read_run_config(run_dir)
    d = dict(cfg["data"])
    if "source" in d:
        return cfg, reload(d["source"], d["binarize"], d["val_fraction"], path=data_dir, workers=workers,
                           cache_dir=d.get("options", {}).get("cache_dir"),
                           memory_limit=d.get("options", {}).get("memory_limit"))
    if data_dir:
        d["data_dir"] = data_dir
    return cfg, load_data(d["data"], d["data_dir"], d["binarize"], d["val_fraction"])


def checked_split(model, splits: Splits, split: str) -> torch.Tensor:
    """One split of a run's data, of the shape the model was trained on. The training split of a dynamically
    binarized run is drawn once by the fixed split seed (as validation and test are), so it is scored on the
    binary data the model was trained on, not on grey levels."""
    x = splits.split(split)
    alphabet = getattr(model.config, "alphabet", None)
    if alphabet and splits.meta.get("alphabet") not in (None, alphabet):
        raise VgmError(f"the data's alphabet ({len(splits.meta['alphabet'])} characters) is not the one the model "
                       f"was trained with ({len(alphabet)}): token ids would mean other characters; evaluate the "
                       "model on the data it was trained on")
    if split == "train" and splits.binarize == "dynamic":
        x = torch.bernoulli(x, generator=torch.Generator(device=x.device).manual_seed(SPLIT_SEED + 1))
    expected = tuple(getattr(model.config, "input_shape", x.shape[1:]))
    if tuple(x.shape[1:]) != expected:
        raise VgmError(f"the data have examples of shape {tuple(x.shape[1:])}, "
                       f"but the model was trained on {expected}")
    return x
