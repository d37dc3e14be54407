"""Name -> class tables through which the CLI, `vgm.load` and the trainer find models and datasets.

A model module registers its class with `@register_model("name")`; a data module registers a loader
with `@register_dataset("name")`. Nothing else needs to change for `vgm train NAME` to work.
"""
from __future__ import annotations

from typing import Callable

MODELS: dict[str, type] = {}
DATASETS: dict[str, Callable] = {}


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
