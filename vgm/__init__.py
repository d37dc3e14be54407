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
# models, datasets and command-line verbs register themselves on import; these modules import only torch and
# numpy at the top, so `import vgm` (and every `vgm` command) starts fast. Experiments, which need scikit-learn,
# scipy and matplotlib, are imported only when one is run (vgm.experiments.load_all).
from . import flows, text, series, seqvae, vrnn, interpolate  # noqa: F401,E402  (flows; sequence data and models)
from . import dsprites, betavae, tcvae, report  # noqa: F401,E402  (disentanglement; vgm report)
from .metrics import command as _metrics_command  # noqa: F401,E402  (vgm metrics)

__all__ = ["AE", "AEConfig", "VAE", "VAEConfig", "Model", "PointMass", "Splits", "TrainConfig", "VgmError",
           "elbo", "log_px", "evaluate", "fit", "load", "load_data", "register_model", "register_dataset",
           "MODELS", "DATASETS", "EXPERIMENTS", "COMMANDS", "register_experiment", "register_command"]
