#!/usr/bin/env python
"""Draw the chains of a trained pipeline: `python scripts/explain.py PIPELINE [--output_dir explain/]`.

Writes four PNGs (the functions are in ddpm_from_scratch.figures.chain, for notebooks too):
  schedule.png         β_t, ᾱ_t and log SNR against t, with the linear and cosine schedules for comparison;
  forward_process.png  a few images at t = 0, 50, 100, 250, 500, 750, 999, drawn from q(x_t | x_0);
  reverse_process.png  x_t and the network's x̂_0 at the same t while the reverse chain samples;
  bound.png            the variational bound's bits/dim per timestep (log scale), L_0 and L_T marked.
The images are the held-out digits for a digits model, or those of --images.
"""

from __future__ import annotations

import argparse
import sys

from ddpm_from_scratch.figures.chain import FIGURE_FILES, write_figures
from ddpm_from_scratch.data.images import check_image_folder
from ddpm_from_scratch.evaluation.evaluate import held_out_images, is_digits_model
from ddpm_from_scratch.hub.loading import exit_with_usage_error, load_pipeline_or_exit


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", help="A pipeline folder or Hub id.")
    p.add_argument("--output_dir", default="explain", help="Where the PNGs go (default: explain/).")
    p.add_argument("--images", metavar="DIR", help="A folder of images for the forward process and the bound "
                                                    "(default: the held-out digits, for a digits model).")
    p.add_argument("--num_bound_images", type=int, default=64,
                   help="Images the bound is averaged over (default: 64; 1000 network calls each).")
    p.add_argument("--num_reverse_images", type=int, default=3, help="Chains shown in the reverse figure (default 3).")
    p.add_argument("--seed", type=int, default=0, help="Seeds every draw (default 0).")
    p.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = p.parse_args(argv)
    for name in ("num_bound_images", "num_reverse_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.images is not None:
        try:
            check_image_folder(args.images)
        except (FileNotFoundError, NotADirectoryError, ValueError) as error:
            p.error(f"--images: {error}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    pipeline = load_pipeline_or_exit(args.pipeline)
    if args.images is None and not is_digits_model(pipeline.unet.config):
        exit_with_usage_error(f"PIPELINE {args.pipeline!r} is not an 8×8 digits model: pass --images DIR with images "
                              "of its kind")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipeline.to(device)
    pipeline.unet.eval()
    pipeline.set_progress_bar_config(disable=args.quiet)
    images = held_out_images(pipeline.unet.config, args.images)[: args.num_bound_images]
    paths = write_figures(pipeline, images, args.output_dir, num_reverse_images=args.num_reverse_images,
                          seed=args.seed, progress=not args.quiet)
    print(f"Wrote {', '.join(FIGURE_FILES[name] for name in paths)} into {args.output_dir}/", file=sys.stderr)
    return paths


if __name__ == "__main__":
    main()
