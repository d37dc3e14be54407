"""Normalizing flows with exact likelihood: transforms, the Flow distribution, and the realnvp/maf/nsf models.

    from vgm.flows import Flow, AffineCoupling, ActNorm
    flow = Flow([ActNorm((2,)), AffineCoupling((2,), hidden=64)], event_shape=(2,))
    flow.log_prob(x); flow.sample((100,)); flow.sample_and_log_prob((100,))
"""
from .actnorm import ActNorm
from .coupling import AffineCoupling, Coupling, RQSplineCoupling, make_mask
from .flow import Flow, Transform
from .linear import LULinear, Permutation, Reverse
from .made import MADE, MaskedAffineAutoregressive
from .models import MAF, NSF, FlowModel, MAFConfig, NSFConfig, RealNVP, RealNVPConfig
from .preprocess import Logit, UniformDequantization
from .spline import rational_quadratic_spline

__all__ = ["ActNorm", "AffineCoupling", "Coupling", "RQSplineCoupling", "make_mask", "Flow", "Transform",
           "LULinear", "Permutation", "Reverse", "MADE", "MaskedAffineAutoregressive", "MAF", "NSF", "FlowModel",
           "MAFConfig", "NSFConfig", "RealNVP", "RealNVPConfig", "Logit", "UniformDequantization",
           "rational_quadratic_spline"]
