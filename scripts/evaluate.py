#!/usr/bin/env python
"""Evaluate a trained pipeline: `python scripts/evaluate.py PIPELINE [--update_model_card]`.

Reports the variational bound in bits/dim on the held-out digits (or on --data_dir), and,
for digit models, the classifier FID, KID and predicted-class histogram of generated samples.
With --feature_model (any transformers image model id or folder, e.g. facebook/dinov2-small),
also FD and KID in that model's features against the evaluation images (FD_DINOv2 with DINOv2).
Writes the results as JSON and prints them as a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm_from_scratch.data.images import check_image_folder
from ddpm_from_scratch.evaluation.encoder_features import load_image_encoder
from ddpm_from_scratch.evaluation.evaluate import evaluate_folder
from ddpm_from_scratch.sampling.fast import MIXED_PRECISION
from ddpm_from_scratch.hub.loading import exit_with_usage_error, load_pipeline_or_exit
from ddpm_from_scratch.sampling.samplers import SAMPLER_HELP, sampler_argument


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("pipeline", help="A pipeline folder or Hub id.")
    p.add_argument("--data_dir", help="Evaluate the bound on this folder of images instead of the held-out digits.")
    p.add_argument("--num_bound_images", type=int, help="Use only the first N evaluation images for the bound.")
    p.add_argument("--bound_steps", type=int, metavar="K",
                   help="The bound of the K-step respaced chain (the scheduler's set_timesteps(K)) instead of the "
                        "training chain's.")
    p.add_argument("--train_data_dir",
                   help="The model's training images, for the bound's reference rows (uniform over the used levels, "
                        "per-pixel histogram); default: the digits' training split, or --data_dir itself.")
    p.add_argument("--num_samples", type=int, default=300, help="Samples for the classifier FID/KID and the FD/KID.")
    p.add_argument("--feature_model", metavar="ID",
                   help="A transformers image model (Hub id or folder; safetensors weights) whose features give FD "
                        "and KID against the evaluation images, e.g. facebook/dinov2-small (downloaded once into "
                        "the Hugging Face cache) or facebook/dinov2-large for the FD_DINOv2 of Stein et al. 2023.")
    p.add_argument("--scheduler", type=sampler_argument, default="ddpm", metavar="NAME", help=SAMPLER_HELP)
    p.add_argument("--num_inference_steps", type=int, help="Default: the sampler's usual count.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=300)
    p.add_argument("--output_json", help="Default: PIPELINE/evaluation.json for a folder, ./evaluation.json otherwise.")
    p.add_argument("--update_model_card", action="store_true", help="Write the numbers into PIPELINE/README.md.")
    p.add_argument("--compile", action="store_true",
                   help="Draw the samples with the U-Net compiled, weights frozen (scripts/sample.py --compile).")
    p.add_argument("--mixed_precision", choices=list(MIXED_PRECISION), default="no",
                   help="Draw the samples under bf16/fp16 autocast; the bound stays float32.")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = p.parse_args(argv)
    for name in ("num_bound_images", "num_samples", "num_inference_steps", "batch_size", "bound_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer, got {value}")
    if args.num_samples < 2:
        p.error("--num_samples must be at least 2 to fit the feature statistics")
    if args.update_model_card and not Path(args.pipeline).is_dir():
        p.error(f"--update_model_card needs a local pipeline folder; {args.pipeline!r} is not one")
    for flag in ("data_dir", "train_data_dir"):
        if getattr(args, flag) is not None:
            try:
                check_image_folder(getattr(args, flag))
            except (FileNotFoundError, NotADirectoryError, ValueError) as error:
                p.error(f"--{flag}: {error}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    encoder = None
    if args.feature_model:  # before the pipeline: both are checked before any work starts
        try:
            encoder = load_image_encoder(args.feature_model)
        except ValueError as error:
            exit_with_usage_error(f"--feature_model: {error}")
    pipeline = load_pipeline_or_exit(args.pipeline)
    return evaluate_folder(
        args.pipeline, pipeline=pipeline, feature_model=encoder, update_card=args.update_model_card, output_json=args.output_json,
        data_dir=args.data_dir, num_bound_images=args.num_bound_images, num_samples=args.num_samples,
        sampler=args.scheduler, num_inference_steps=args.num_inference_steps, seed=args.seed,
        batch_size=args.batch_size, progress=not args.quiet, compile_sampling=args.compile,
        mixed_precision=args.mixed_precision, bound_steps=args.bound_steps, train_data_dir=args.train_data_dir,
    )


if __name__ == "__main__":
    main()
