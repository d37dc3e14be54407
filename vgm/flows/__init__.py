"""Normalizing flows with exact likelihood: transforms, the Flow distribution, and the realnvp/maf/nsf/glow models.

    from vgm.flows import Flow, AffineCoupling, ActNorm
    flow = Flow([ActNorm((2,)), AffineCoupling((2,), hidden=64)], event_shape=(2,))
    flow.log_prob(x); flow.sample((100,)); flow.sample_and_log_prob((100,))
    # conditional: Flow([...AffineCoupling((2,), 64, context_features=3)...], (2,), context_features=3)
    flow.log_prob(x, context); flow.sample((100,), context)
"""
from .actnorm import ActNorm
from .autoregressive import MaskedRQSAutoregressive
from .conv1x1 import InvertibleConv1x1
from .coupling import AffineChannelCoupling, AffineCoupling, Coupling, RQSplineCoupling, make_mask
from .flow import Chain, Flow, Transform
from .linear import LULinear, Permutation, Reverse
from .made import MADE, MaskedAffineAutoregressive
from .models import (MAF, NSF, FlowModel, Glow, GlowConfig, MAFConfig, NSFConfig, RealNVP, RealNVPConfig)
from .multiscale import GaussianPrior, MultiScale, Squeeze
from .preprocess import Logit, UniformDequantization
from .spline import rational_quadratic_spline

__all__ = ["ActNorm", "AffineChannelCoupling", "AffineCoupling", "Coupling", "RQSplineCoupling", "make_mask",
           "Chain", "Flow", "Transform", "LULinear", "Permutation", "Reverse", "MADE", "MaskedAffineAutoregressive",
           "MaskedRQSAutoregressive", "InvertibleConv1x1", "GaussianPrior", "MultiScale", "Squeeze", "MAF", "NSF",
           "FlowModel", "Glow", "GlowConfig", "MAFConfig", "NSFConfig", "RealNVP", "RealNVPConfig", "Logit",
           "UniformDequantization", "rational_quadratic_spline"]
