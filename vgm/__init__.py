"""vgm: variational generative models you can trust, train on a CPU, and look inside."""
__version__ = "0.1.0"

from .ae import AE, AEConfig, PointMass
from .base import Model
from .checkpoint import load
from .data import Splits
from .data import load as load_data
from .elbo import elbo, log_px
from .errors import VgmError
from .evaluate import evaluate
from .registry import COMMANDS, DATASETS, EXPERIMENTS, MODELS, register_command, register_dataset, register_experiment, register_model
from .train import TrainConfig, fit
from .vae import VAE, VAEConfig
from . import flows  # noqa: F401,E402  (normalizing flows: realnvp, maf, nsf; 2-D toy data)
from . import experiments  # noqa: F401,E402  (registers experiments)
from . import report  # noqa: F401,E402  (vgm report DIR: every experiment's results in one HTML page)
from .experiments import collapse  # noqa: F401,E402  (sequence VAEs: names/text/co2/digit-rows data, seqvae, vrnn, vgm interpolate)
from .experiments import beta_sweep  # noqa: F401,E402  (disentanglement: dsprites data, betavae, tcvae, vgm metrics, beta-sweep)

__all__ = ["AE", "AEConfig", "VAE", "VAEConfig", "Model", "PointMass", "Splits", "TrainConfig", "VgmError",
           "elbo", "log_px", "evaluate", "fit", "load", "load_data", "register_model", "register_dataset",
           "MODELS", "DATASETS", "EXPERIMENTS", "COMMANDS", "register_experiment", "register_command"]
