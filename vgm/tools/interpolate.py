"""`vgm interpolate RUN_DIR`: walk the latent space between two sequences of a model with a global latent (seqvae).

The two sequences are given as text (--a, --b; text models) or picked from a data split by index (--i, --j).
Their posterior means are joined by a straight line; each of --steps points on it is decoded greedily.
Text is printed and written to OUT.txt; real-valued sequences are plotted into OUT (PNG).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load
from ..errors import VgmError
from ..registry import register_command
from ..data.tokens import encode_text
from ..models.sequences import render
from ..train import resolve_device


@register_command("interpolate")
def cmd_interpolate(argv: list[str]) -> int:
    from ..options import Parser, seed
    from ..run import run_data
    p = Parser(prog="vgm interpolate", description="decode points on the line between two sequences' latent codes")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--a", default=None, help="first sequence, as text (text models)")
    p.add_argument("--b", default=None, help="second sequence, as text (text models)")
    p.add_argument("--i", type=int, default=0, help="index of the first sequence in --split (if --a is not given)")
    p.add_argument("--j", type=int, default=1, help="index of the second sequence in --split (if --b is not given)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--steps", type=int, default=8, help="points on the line, ends included")
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: RUN_DIR/interpolation.png)")
    p.add_argument("--data-dir", default=None, help="where the run's data now are, if moved")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if a.steps < 2:
        raise VgmError("--steps must be >= 2")
    model = load(a.run_dir, resolve_device(a.device))
    if not hasattr(model, "interpolate"):
        raise VgmError(f"{a.run_dir} holds a {model.kind!r} model, which has no single latent code per "
                       "sequence to interpolate (use a seqvae run)")
    torch.manual_seed(a.seed)
    text = model.config.likelihood == "categorical"
    ends = []
    for given, idx, flag in ((a.a, a.i, "a"), (a.b, a.j, "b")):
        if given is not None:
            if not text:
                raise VgmError(f"--{flag} takes text, but this model is for real-valued sequences; use --{'i' if flag == 'a' else 'j'}")
            if not given:
                raise VgmError(f"--{flag} is empty")
            ends.append(encode_text([given], model.config.alphabet))
        else:
            if not hasattr(a, "_data"):
                a._data = run_data(a.run_dir, a.data_dir)[1].split(a.split)
            data = a._data
            if not 0 <= idx < len(data):
                raise VgmError(f"index {idx} out of range: the {a.split} split has {len(data)} sequences")
            ends.append(data[idx:idx + 1])
    device = model.device
    path = model.interpolate(ends[0].to(device), ends[1].to(device), a.steps)
    out = a.out or a.run_dir / "interpolation.png"
    render(model, path, out, title="interpolation in latent space")
    print(f"wrote {out}" + (f" and {out.with_suffix('.txt')}" if text else ""))
    return 0
