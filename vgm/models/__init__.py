"""Models: one module per model of the cards, each an `nn.Module` registered by name (`vgm train NAME`).

ae, vae, betavae, tcvae      image models (MLP or conv backbones from nets, decoder likelihoods from likelihood)
seqvae, vrnn                 sequence models (what they share is in sequences)
Flows live in vgm.flows.
"""
from .ae import AE, AEConfig, PointMass
from .vae import VAE, VAEConfig
from .betavae import BetaVAE, BetaVAEConfig
from .tcvae import TCVAE, TCVAEConfig
from .seqvae import SeqVAE, SeqVAEConfig
from .vrnn import VRNN, VRNNConfig
from .iwae import IWAE, IWAEConfig
from .vamp import Vamp, VampConfig
from .iaf import IAF, IAFConfig
from .hvae import HVAE2, HVAE2Config
from .factorvae import FactorVAE, FactorVAEConfig
from .dipvae import DIPVAE, DIPVAEConfig
from .cvae import CVAE, CVAEConfig
from .vqvae import VQVAE, VQVAEConfig

__all__ = ["AE", "AEConfig", "PointMass", "VAE", "VAEConfig", "BetaVAE", "BetaVAEConfig", "TCVAE", "TCVAEConfig",
           "SeqVAE", "SeqVAEConfig", "VRNN", "VRNNConfig", "IWAE", "IWAEConfig", "Vamp", "VampConfig", "IAF",
           "IAFConfig", "HVAE2", "HVAE2Config", "FactorVAE", "FactorVAEConfig", "DIPVAE", "DIPVAEConfig",
           "CVAE", "CVAEConfig", "VQVAE", "VQVAEConfig"]
