"""Run-folder files, written atomically and read without unpickling anything.

model.safetensors + model.json   the trained model (weights; kind and config)  -> vgm.load(run_dir)
checkpoint.safetensors           training state: model, optimizer, RNG states, epoch (JSON in the metadata)
Every write goes to a temporary file in the same folder, is fsync'ed, then renamed over the target, so a crash
leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import VgmError
from .registry import MODELS

FORMAT = "vgm/1"
TMP_SUFFIX = ".vgm-tmp"


def atomic_write(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder (fsync'ed, then renamed over `path`).

    The temporary file is created with mode 0666 less the process umask, as any new file (the umask is never
    changed: that would race with other threads). A missing folder is a one-line error naming `path`.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise VgmError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise VgmError(f"cannot write {path}: it is a folder")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise VgmError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files that a killed vgm process left in `folder` (never a finished file); the count."""
    n = 0
    for f in Path(folder).glob(f".*{TMP_SUFFIX}"):
        f.unlink(missing_ok=True)
        n += 1
    return n


def write_json(path: Path | str, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise VgmError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VgmError(f"{path} is corrupt (not valid JSON: {e})") from None


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, or a one-line VgmError if it is missing or corrupt."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise VgmError(f"{path} does not exist") from None
    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8:8 + n]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, Exception) as e:  # noqa: BLE001
        raise VgmError(f"{path} is corrupt or not a safetensors file ({type(e).__name__})") from None
    return tensors, meta


def model_json(model) -> dict:
    return {"format": FORMAT, "kind": model.kind, "config": dataclasses.asdict(model.config)}


def save_model(model, run_dir) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "model.safetensors", st_save(_tensors(model.state_dict()), {"format": FORMAT}))
    write_json(run_dir / "model.json", model_json(model))


def build_model(info: dict, source: Path):
    """Instantiate the model class named in a model.json dict."""
    if not isinstance(info, dict) or info.get("format") != FORMAT or "kind" not in info:
        raise VgmError(f"{source} is not a vgm model description")
    kind = info["kind"]
    if kind not in MODELS:
        raise VgmError(f"{source}: unknown model kind {kind!r} (this vgm knows {', '.join(sorted(MODELS))})")
    cls = MODELS[kind]
    try:
        return cls(cls.Config(**info.get("config", {})))
    except (TypeError, ValueError) as e:
        raise VgmError(f"{source}: bad model config ({e})") from None


def load_state(model, state: dict[str, torch.Tensor], source: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise VgmError(f"{source} does not fit the model in model.json ({first[1].strip() if len(first) > 1 else first[0]})") from None


def load(run_dir, device: str | torch.device = "cpu"):
    """The trained model of a run folder (any registered kind), in eval mode, on `device`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VgmError(f"run folder {run_dir} does not exist")
    model = build_model(read_json(run_dir / "model.json"), run_dir / "model.json")
    state, _ = read_safetensors(run_dir / "model.safetensors")
    load_state(model, state, run_dir / "model.safetensors")
    return model.to(device).eval()


# ----- training checkpoint -----------------------------------------------------------------------------

def _optimizers(optimizer) -> list[torch.optim.Optimizer]:
    return list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]


def _tag(i: int) -> str:
    """Names of the i-th optimizer's tensors and metadata: optim / param_groups for the first (the format of a
    one-optimizer checkpoint), optim1 / param_groups1 ... for a model's further optimizers (e.g. a discriminator's)."""
    return "" if i == 0 else str(i)


def save_checkpoint(path: Path, model, optimizer, rng: dict[str, torch.Tensor], info: dict) -> None:
    """model.*, optim<i>.<param index>.<name>, rng.* tensors; each optimizer's hyper-parameters and `info` as JSON.
    `optimizer` is one optimizer or a list of them."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "info": json.dumps(info), "model": json.dumps(model_json(model))}
    opts = _optimizers(optimizer)
    for i, o in enumerate(opts):
        opt = o.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in opt["state"].items():
            for name, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim{_tag(i)}.{idx}.{name}"] = v
                else:
                    scalars.setdefault(str(idx), {})[name] = v
        meta[f"param_groups{_tag(i)}"] = json.dumps(opt["param_groups"])
        meta[f"optim_scalars{_tag(i)}"] = json.dumps(scalars)
    meta["optimizers"] = str(len(opts))
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    atomic_write(path, st_save(_tensors(tensors), meta))


IMPLEMENTATION = ("fused", "foreach")     # optimizer settings that choose a kernel, not the optimisation


def load_checkpoint(path: Path, model, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore model and optimizer(s) in place; return the RNG tensors and the info dict."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise VgmError(f"{path} is not a vgm training checkpoint")
    opts = _optimizers(optimizer)
    try:
        saved_model = json.loads(meta["model"])
        info = json.loads(meta["info"])
        groups = [json.loads(meta[f"param_groups{_tag(i)}"]) for i in range(len(opts))]
        scalars = [json.loads(meta[f"optim_scalars{_tag(i)}"]) for i in range(len(opts))]
    except (KeyError, json.JSONDecodeError):
        raise VgmError(f"{path} is not a vgm training checkpoint (metadata missing)") from None
    if saved_model != json.loads(json.dumps(model_json(model))):
        raise VgmError(f"{path} holds a different model ({saved_model.get('kind')}) than this run's config")
    if int(meta.get("optimizers", "1")) != len(opts):
        raise VgmError(f"{path} holds {meta.get('optimizers', '1')} optimizer states, this model has {len(opts)}")
    load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    try:
        for i, o in enumerate(opts):
            state: dict[int, dict[str, Any]] = {}
            prefix = f"optim{_tag(i)}."
            for k, v in tensors.items():
                if k.startswith(prefix):
                    idx, name = k[len(prefix):].split(".", 1)
                    state.setdefault(int(idx), {})[name] = v
            for idx, d in scalars[i].items():
                state.setdefault(int(idx), {}).update(d)
            for saved, now in zip(groups[i], o.param_groups):     # the kernel is this build's choice, not state
                saved.update({k: now[k] for k in IMPLEMENTATION if k in now})
            o.load_state_dict({"state": state, "param_groups": groups[i]})
        if not ({"torch", "shuffle"} <= set(rng) and isinstance(info["epoch"], int)
                and isinstance(info["history"], list) and len(info["history"]) == info["epoch"]):
            raise ValueError("RNG state, epoch or history missing")
        float(info["best"]), int(info["best_epoch"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise VgmError(f"{path} is not a usable vgm training checkpoint ({e})") from None
    return rng, info
