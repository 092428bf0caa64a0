#!/usr/bin/env python
"""Analytic-DPM without training: `python scripts/analytic_variance.py PIPELINE --output_dir DIR`.

Estimates Γ_t = E‖ε_θ(x_t, t)‖²/d of PIPELINE's ε-model on training images (the digits' training split, or
--data_dir) at every training timestep, and writes DIR: the same U-Net with an `AnalyticDPMScheduler`, whose
reverse variance is Bao et al.'s (2022) optimal σ*² on any chain. PIPELINE is a pipeline folder or Hub id of this
package, or diffusers' own DDPMPipeline. Then:

    DDPMFromScratchPipeline.from_pretrained(DIR)(num_inference_steps=25)            # samples with σ*²
    python scripts/evaluate.py DIR --bound_steps 25                                   # its bound on a 25-step chain
    ddpm_from_scratch.schedulers.analytic_variance.optimal_trajectory(pipe.scheduler, 25)        # the best 25 timesteps
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ddpm_from_scratch.schedulers.analytic_variance import GAMMA_ESTIMATORS, to_analytic
from ddpm_from_scratch.data.images import check_image_folder
from ddpm_from_scratch.evaluation.evaluate import held_out_images, reference_training_images
from ddpm_from_scratch.hub.loading import exit_with_usage_error, load_pipeline_or_exit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", help="A pipeline folder or Hub id with an ε-predicting U-Net.")
    p.add_argument("--output_dir", required=True, help="Where the pipeline with the Analytic-DPM scheduler goes.")
    p.add_argument("--num_images", type=int, default=100,
                   help="Training images per timestep for Γ (Bao et al.: 10 already match 50,000 to ±0.005).")
    p.add_argument("--data_dir", help="The training images (default: the embedded digits' training split).")
    p.add_argument("--estimator", choices=GAMMA_ESTIMATORS, default="error",
                   help="error: Γ = 1 − E‖ε − ε_θ‖²/d (precise where the x̂_0 error is small; see estimate_gamma); "
                        "norm: Γ = E‖ε_θ‖²/d, Bao et al.'s estimate.")
    p.add_argument("--seed", type=int, default=0, help="Seeds the choice of images and the noise.")
    p.add_argument("--overwrite", action="store_true", help="Write into --output_dir even if it is not empty.")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    args = p.parse_args(argv)
    if args.num_images < 1:
        p.error(f"--num_images must be a positive integer, got {args.num_images}")
    if args.data_dir is not None:
        try:
            check_image_folder(args.data_dir)
        except (FileNotFoundError, NotADirectoryError, ValueError) as error:
            p.error(f"--data_dir: {error}")
    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite:
        p.error(f"--output_dir {str(output)!r} exists and is not empty; pass --overwrite to write into it anyway")
    return args


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    pipeline = load_pipeline_or_exit(args.pipeline)
    if pipeline.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        exit_with_usage_error(f"PIPELINE {args.pipeline!r}: Analytic-DPM needs an ε-model, but its scheduler has "
                              f"prediction_type={pipeline.scheduler.config.prediction_type!r}")
    if args.data_dir is None:
        images, _ = reference_training_images(pipeline.unet.config)
    else:
        images = held_out_images(pipeline.unet.config, args.data_dir)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(images), generator=generator)[: args.num_images]
    analytic = to_analytic(pipeline, images[chosen], generator=generator, progress=not args.quiet,
                           estimator=args.estimator)
    analytic.save_pretrained(args.output_dir)
    gamma = analytic.scheduler.config.gamma
    print(f"Γ from {len(chosen)} training images per timestep (Γ_0 = {gamma[0]:.4f}, Γ_T-1 = {gamma[-1]:.4f}); wrote "
          f"{args.output_dir}/: DDPMFromScratchPipeline.from_pretrained({args.output_dir!r}) samples with σ*².",
          file=sys.stderr)
    return analytic


if __name__ == "__main__":
    main(sys.argv[1:])
