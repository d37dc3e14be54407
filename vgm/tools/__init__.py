"""Tools that read a trained run: `vgm interpolate`, `vgm metrics`, `vgm report`, traversal figures, and the
sample-quality scorer. They use the models and data below them; nothing below imports them."""
from . import explore, interpolate, metrics, report, traversal  # noqa: F401  (register their command-line verbs)
