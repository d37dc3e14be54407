"""vgm: variational generative models you can trust, train on a CPU, and look inside.

Layout (imports run downwards only):
    vgm.models       ae, vae, betavae, tcvae, seqvae, vrnn (+ nets, likelihood, sequences)
    vgm.flows        RealNVP, MAF, NSF and their transforms
    vgm.data         data sets (digits, mnist, dsprites, text, series, toy2d) and dequantization
    vgm.metrics      disentanglement metrics
    vgm.tools        what reads a trained run: interpolate, metrics command, report, traversals
    vgm.experiments  the cards' claims, one module each
    the contract: base, registry, errors, elbo, evaluate, train, checkpoint, run, options, plots, cli
"""
__version__ = "0.1.0"

from .base import Model
from .checkpoint import load
from .data import Splits
from .data import load as load_data
from .elbo import elbo, log_px
from .errors import VgmError
from .evaluate import evaluate
from .models import AE, VAE, AEConfig, PointMass, VAEConfig
from .registry import COMMANDS, DATASETS, EXPERIMENTS, MODELS, register_command, register_dataset, register_experiment, register_model
from .train import TrainConfig, fit
# models, datasets and command-line verbs register themselves on import; these modules import only torch and
# numpy at the top, so `import vgm` (and every `vgm` command) starts fast. Experiments, which need scikit-learn,
# scipy and matplotlib, are imported only when one is run (vgm.experiments.load_all).
from . import flows, tools  # noqa: F401,E402  (flow models; the verbs interpolate, metrics, report)

__all__ = ["AE", "AEConfig", "VAE", "VAEConfig", "Model", "PointMass", "Splits", "TrainConfig", "VgmError",
           "elbo", "log_px", "evaluate", "fit", "load", "load_data", "register_model", "register_dataset",
           "MODELS", "DATASETS", "EXPERIMENTS", "COMMANDS", "register_experiment", "register_command"]
