"""Disentanglement metrics, one module each, on plain NumPy arrays so that they score any representation.

codes (N, d) floats and factors (N, K) integer indices:  mig, sap, dci
an encoder (images -> (N, d)) and a factor dataset:      beta_vae_score, factor_vae_score
scikit-learn and scipy are imported when a metric runs, so that `import vgm` stays fast.
"""
from .beta_vae_score import beta_vae_score
from .dci import dci
from .factor_vae_score import factor_vae_score
from .mig import mig
from .sap import sap

__all__ = ["mig", "sap", "dci", "beta_vae_score", "factor_vae_score"]
