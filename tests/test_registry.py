"""The registry: one name, one object."""
from __future__ import annotations

import pytest

import vgm
from vgm.registry import COMMANDS, DATASETS, EXPERIMENTS, MODELS, register_command, register_dataset, \
    register_experiment, register_model


@pytest.mark.parametrize("table, register", [(MODELS, register_model), (DATASETS, register_dataset),
                                             (EXPERIMENTS, register_experiment), (COMMANDS, register_command)])
def test_a_taken_name_is_refused_not_overwritten(table, register):
    """Catches: `MODELS[name] = cls` (a second registration silently replaced the first: `vgm train vae` would
    then train whatever registered "vae" last)."""
    if table is EXPERIMENTS:
        from vgm.experiments import load_all
        load_all()
    name = next(iter(table))
    before = table[name]

    class Impostor(vgm.Model):
        pass

    with pytest.raises(vgm.VgmError, match=f"{name!r} is already registered"):
        register(name)(Impostor)
    assert table[name] is before
    if table is MODELS:
        assert before.kind == name        # the refused class did not relabel the registered one either


def test_registering_the_same_object_again_is_allowed():
    """A module imported twice (importlib.reload) re-registers its own class: not a conflict."""
    cls = MODELS["vae"]
    register_model("vae", data=cls.data_kinds, default_data=cls.default_data)(cls)
    assert MODELS["vae"] is cls
