"""Name -> class tables through which the CLI, `vgm.load` and the trainer find models and datasets.

A model module registers its class with `@register_model("name")`; a data module registers a loader
with `@register_dataset("name")`; an experiment registers `run(out, quick, seed, data_dir)` with
`@register_experiment("name")`; a module that adds a command line verb registers `handler(argv) -> int`
with `@register_command("name")`. The module only has to be imported by `vgm/__init__.py`.
"""
from __future__ import annotations

from typing import Callable

MODELS: dict[str, type] = {}
DATASETS: dict[str, Callable] = {}
DATASET_KINDS: dict[str, str] = {}       # name -> images | vectors | tokens | sequences (as Splits.kind)
DATA_KINDS = ("images", "vectors", "tokens", "sequences")
EXPERIMENTS: dict[str, Callable] = {}
COMMANDS: dict[str, Callable] = {}


def register_model(name: str, data: tuple[str, ...] = ("images", "vectors"), default_data: str = "digits"):
    """Register a model class; `data` are the kinds of data it takes, `default_data` what `vgm train NAME`
    trains on when no --data is given."""
    assert set(data) <= set(DATA_KINDS), data

    def deco(cls):
        cls.kind, cls.data_kinds, cls.default_data = name, tuple(data), default_data
        MODELS[name] = cls
        return cls
    return deco


def register_dataset(name: str, kind: str = "images"):
    """Register a loader `fn(data_dir, binarize, val_fraction) -> Splits` whose examples are of `kind`."""
    assert kind in DATA_KINDS, kind

    def deco(fn):
        DATASETS[name] = fn
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
        fn.takes_data = data
        EXPERIMENTS[name] = fn
        return fn
    return deco


def register_command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco
