"""A learned flow prior for the VAE (`vgm train vae --prior flow`): p(z) is a MAF or an NSF from vgm.flows on a
Normal(0, I) base, trained with the model, so the aggregate posterior need not be a standard Gaussian.

    log p(z) = log N(f(z); 0, I) + log|det ∂f/∂z|          (exact, by the change of variables)
maf: MADE affine layers, order reversed in between (Papamakarios et al., 2017): one pass for log p(z), the
     density the ELBO and vgm.log_px need; sampling z ~ p needs latent_dim sequential passes per layer.
nsf: rational-quadratic spline couplings on alternating halves, each followed by an LU linear layer
     (Durkan et al., 2019); no ActNorm, whose data-dependent start would be set by the first batch of codes.
Every layer starts as the identity (MADE's and the couplings' last layers are zero; LU starts as a permutation),
so training starts from the standard-normal prior. The KL term has no closed form against a flow: vgm.elbo
falls back to the one-sample estimate log q(z|x) − log p(z).
"""
from __future__ import annotations

from ..flows.coupling import RQSplineCoupling
from ..flows.flow import Flow, Transform
from ..flows.linear import LULinear, Reverse
from ..flows.made import MaskedAffineAutoregressive

FLOW_PRIORS = ("maf", "nsf")


def flow_prior(kind: str, latent_dim: int, depth: int, hidden: int) -> Flow:
    """The Flow p(z) on (latent_dim,): `depth` MAF or NSF layers whose networks have `hidden` units."""
    if kind not in FLOW_PRIORS:
        raise ValueError(f"unknown flow prior {kind!r} (choose {' or '.join(FLOW_PRIORS)})")
    if depth < 1 or hidden < 1:
        raise ValueError(f"a flow prior needs prior_depth >= 1 and prior_hidden >= 1, got {depth} and {hidden}")
    ts: list[Transform] = []
    for i in range(depth):
        if kind == "maf":
            ts.append(MaskedAffineAutoregressive(latent_dim, hidden))
            if i < depth - 1:
                ts.append(Reverse(latent_dim))
        else:
            ts += [RQSplineCoupling((latent_dim,), hidden, parity=i), LULinear(latent_dim)]
    return Flow(ts, (latent_dim,))
