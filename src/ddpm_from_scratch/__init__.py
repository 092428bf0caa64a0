"""Denoising diffusion probabilistic models from first principles, as a diffusers plugin."""

from .pipeline_ddpm import DDPMFromScratchPipeline
from .scheduling_ddpm import DDPMFromScratchScheduler
from .unet import DDPMFromScratchUNet

__all__ = ["DDPMFromScratchPipeline", "DDPMFromScratchScheduler", "DDPMFromScratchUNet"]
__version__ = "0.1.0"
