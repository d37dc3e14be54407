"""Name -> class tables through which the CLI, `vgm.load` and the trainer find models and datasets.

A model module registers its class with `@register_model("name")`; a data module registers a loader
with `@register_dataset("name")`; an experiment registers `run(out, quick, seed, data_dir)` with
`@register_experiment("name")`; a module that adds a command line verb registers `handler(argv) -> int`
with `@register_command("name")`. vgm's own modules register when `import vgm` imports its sub-packages
(vgm.models, vgm.flows, vgm.data, vgm.tools); a model written elsewhere registers when its module is imported.
A name is taken once: registering another object under a name already in use is an error, not an overwrite
(re-importing the same module, e.g. importlib.reload, replaces its own entry).
"""
from __future__ import annotations

from typing import Callable

from .errors import VgmError

MODELS: dict[str, type] = {}
DATASETS: dict[str, Callable] = {}
DATASET_KINDS: dict[str, str] = {}       # name -> images | vectors | tokens | sequences (as Splits.kind)
DATA_KINDS = ("images", "vectors", "tokens", "sequences")
EXPERIMENTS: dict[str, Callable] = {}
COMMANDS: dict[str, Callable] = {}


def _claim(table: dict, name: str, obj, what: str) -> None:
    """table[name] = obj, refusing a name that another object (not a reload of the same one) already holds."""
    old = table.get(name)
    same = lambda a, b: (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", None), getattr(b, "__qualname__", None))
    if old is not None and old is not obj and not same(old, obj):
        raise VgmError(f"{what} name {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
                       f"choose another name for {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}")
    table[name] = obj


def register_model(name: str, data: tuple[str, ...] = ("images", "vectors"), default_data: str = "digits"):
    """Register a model class; `data` are the kinds of data it takes, `default_data` what `vgm train NAME`
    trains on when no --data is given."""
    assert set(data) <= set(DATA_KINDS), data

    def deco(cls):
        _claim(MODELS, name, cls, "model")
        cls.kind, cls.data_kinds, cls.default_data = name, tuple(data), default_data
        return cls
    return deco


def register_dataset(name: str, kind: str = "images"):
    """Register a loader `fn(data_dir, binarize, val_fraction) -> Splits` whose examples are of `kind`."""
    assert kind in DATA_KINDS, kind

    def deco(fn):
        _claim(DATASETS, name, fn, "dataset")
        DATASET_KINDS[name] = kind
        return fn
    return deco


def models_for(kind: str) -> list[str]:
    """The registered models that take data of this kind."""
    return sorted(n for n, cls in MODELS.items() if kind in cls.data_kinds)


def datasets_for(model: str) -> list[str]:
    """The registered data sets a model takes."""
    return sorted(n for n, k in DATASET_KINDS.items() if k in MODELS[model].data_kinds)


def register_experiment(name: str, data: str | None = None):
    """data: what `vgm experiment NAME --data PATH` may point at ("images", "labelled images"); None when the
    experiment runs on fixed data only (dSprites' ground truth, the text corpus, its own settings per set)."""
    def deco(fn):
        _claim(EXPERIMENTS, name, fn, "experiment")
        fn.takes_data = data
        return fn
    return deco


def register_command(name: str):
    def deco(fn):
        _claim(COMMANDS, name, fn, "command")
        return fn
    return deco
