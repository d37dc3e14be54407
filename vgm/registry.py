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
EXPERIMENTS: dict[str, Callable] = {}
COMMANDS: dict[str, Callable] = {}


def register_model(name: str):
    def deco(cls):
        cls.kind = name
        MODELS[name] = cls
        return cls
    return deco


def register_dataset(name: str):
    def deco(fn):
        DATASETS[name] = fn
        return fn
    return deco


def register_experiment(name: str):
    def deco(fn):
        EXPERIMENTS[name] = fn
        return fn
    return deco


def register_command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco
