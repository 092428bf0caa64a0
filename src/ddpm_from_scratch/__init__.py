"""Denoising diffusion probabilistic models from first principles, as a diffusers plugin.

Where things are: ``models/`` (the networks), ``schedulers/`` (the processes), ``pipelines/`` (sampling and the Hub
mechanics they share), ``likelihood.py`` (the bound), ``training/``, ``data/``, ``sampling/``, ``evaluation/``,
``hub/``, ``figures/`` and ``toy/`` (Sohl-Dickstein et al.'s toy problems).
"""

import sys as _sys

from .models import toy_models as _toy_models
from .models import unet as _unet
from .models.toy_models import ToyDenoiser
from .models.unet import DDPMFromScratchUNet
from .pipelines import pipeline_ddpm as _pipeline_ddpm
from .pipelines import pipeline_toy as _pipeline_toy
from .pipelines.pipeline_ddpm import DDPMFromScratchPipeline
from .pipelines.pipeline_toy import BinomialDiffusionPipeline, PointDiffusionPipeline
from .schedulers import scheduling_analytic_dpm as _scheduling_analytic_dpm
from .schedulers import scheduling_binomial as _scheduling_binomial
from .schedulers import scheduling_ddpm as _scheduling_ddpm
from .schedulers.scheduling_analytic_dpm import AnalyticDPMScheduler
from .schedulers.scheduling_binomial import BinomialDiffusionScheduler
from .schedulers.scheduling_ddpm import DDPMFromScratchScheduler

# Folders saved before the package had sub-packages name their components by these dotted paths
# (``"unet": ["ddpm_from_scratch.unet", "DDPMFromScratchUNet"]`` in model_index.json), which diffusers imports:
# keep every one of them importable, for good.
LEGACY_MODULES = {
    "unet": _unet, "toy_models": _toy_models, "scheduling_ddpm": _scheduling_ddpm,
    "scheduling_analytic_dpm": _scheduling_analytic_dpm, "scheduling_binomial": _scheduling_binomial,
    "pipeline_ddpm": _pipeline_ddpm, "pipeline_toy": _pipeline_toy,
}
for _name, _module in LEGACY_MODULES.items():
    _sys.modules[f"{__name__}.{_name}"] = _module

__all__ = ["AnalyticDPMScheduler", "BinomialDiffusionPipeline", "BinomialDiffusionScheduler", "DDPMFromScratchPipeline",
           "DDPMFromScratchScheduler", "DDPMFromScratchUNet", "PointDiffusionPipeline", "ToyDenoiser"]
__version__ = "0.1.0"
