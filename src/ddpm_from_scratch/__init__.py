"""Denoising diffusion probabilistic models from first principles, as a diffusers plugin."""

from .pipeline_ddpm import DDPMFromScratchPipeline
from .scheduling_analytic_dpm import AnalyticDPMScheduler
from .pipeline_toy import BinomialDiffusionPipeline, PointDiffusionPipeline
from .scheduling_binomial import BinomialDiffusionScheduler
from .scheduling_ddpm import DDPMFromScratchScheduler
from .toy_models import ToyDenoiser
from .unet import DDPMFromScratchUNet

__all__ = ["AnalyticDPMScheduler", "BinomialDiffusionPipeline", "BinomialDiffusionScheduler", "DDPMFromScratchPipeline",
           "DDPMFromScratchScheduler", "DDPMFromScratchUNet", "PointDiffusionPipeline", "ToyDenoiser"]
__version__ = "0.1.0"
