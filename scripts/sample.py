#!/usr/bin/env python
"""Sample from a trained pipeline: `python scripts/sample.py PIPELINE [--num_images 64] [--scheduler ddim] ...`.

PIPELINE is a folder written by scripts/train.py (or `save_pretrained`) or a Hub id.
Writes a grid PNG and, with --save_individual, every image on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ddpm_from_scratch.sampling.fast import MIXED_PRECISION, compile_for_sampling, sampling_autocast
from ddpm_from_scratch.figures.grid import DEFAULT_GRID_WIDTH, image_grid
from ddpm_from_scratch.hub.loading import exit_with_usage_error, load_pipeline_or_exit
from ddpm_from_scratch.sampling.samplers import SAMPLER_HELP, default_num_inference_steps, generate, sampler_argument


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("pipeline", help="A pipeline folder or Hub id.")
    p.add_argument("--num_images", type=int, default=None,
                   help="Default: one per --class_labels label, else 64.")
    p.add_argument("--class_labels", nargs="+", metavar="LABEL",
                   help="A class-conditional model's classes, by index or by name (its model_index.json's id2label): "
                        "one label for every image, or one per image.")
    p.add_argument("--guidance_scale", type=float, default=1.0,
                   help="Classifier-free guidance s: ε(x, ∅) + s·(ε(x, c) − ε(x, ∅)); 1 is the conditional model.")
    p.add_argument("--scheduler", type=sampler_argument, default="ddpm", metavar="NAME", help=SAMPLER_HELP)
    p.add_argument("--num_inference_steps", type=int, default=None,
                   help="Default: 1000 for ddpm and DDPMScheduler, 25 for dpm-solver and the multistep solvers "
                        "(DPM-Solver++, DEIS, UniPC), 50 for the rest.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=64, help="Images generated at once.")
    p.add_argument("--output", default="samples.png", help="Where the grid goes.")
    p.add_argument("--grid_scale", type=int, default=None,
                   help=f"Enlarge each image this many times in the grid (nearest neighbour); default: the smallest "
                        f"whole factor that makes the grid at least {DEFAULT_GRID_WIDTH} px wide.")
    p.add_argument("--save_individual", metavar="DIR", help="Also write each image, at its native size, to "
                                                            "DIR/NNNNN.png.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels_last", action="store_true",
                   help="Run the U-Net in channels-last memory format: faster convolutions on many machines "
                        "(1.14× for the CIFAR-10 network on a 2-core CPU), same images to ~1e-5.")
    p.add_argument("--compile", action="store_true",
                   help="Compile the U-Net with TorchInductor, weights frozen (on a 2-core CPU 1.27× per step for "
                        "the digits network, ~1.0× for CIFAR-10, after tens of seconds of compiling); same images "
                        "to ~1e-5.")
    p.add_argument("--mixed_precision", choices=list(MIXED_PRECISION), default="no",
                   help="Run the U-Net under bf16/fp16 autocast (1.35-1.8× on a CPU with AVX512-BF16); "
                        "images within a few 8-bit levels of float32's.")
    args = p.parse_args(argv)
    if not args.guidance_scale >= 0:
        p.error(f"--guidance_scale must be a number ≥ 0, got {args.guidance_scale}")
    for name in ("num_images", "num_inference_steps", "batch_size", "grid_scale"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer, got {value}")
    return args


def class_labels_or_exit(pipe, args: argparse.Namespace) -> tuple[list[int] | None, int]:
    """The class of each image and the number of images, or a one-line error naming the flag and the value."""
    conditional = getattr(pipe, "num_classes", None) is not None
    if not conditional and (args.class_labels or args.guidance_scale != 1.0):
        flag = "--class_labels" if args.class_labels else f"--guidance_scale {args.guidance_scale}"
        exit_with_usage_error(f"{flag}: {args.pipeline} is not a class-conditional model")
    if not args.class_labels:
        return None, args.num_images or 64
    try:
        ids = pipe.get_label_ids([int(x) if x.lstrip("-").isdigit() else x for x in args.class_labels])
    except ValueError as error:
        exit_with_usage_error(f"--class_labels {' '.join(args.class_labels)}: {error}")
    num_images = args.num_images or len(ids)
    if len(ids) == 1:
        ids = ids * num_images
    if len(ids) != num_images:
        exit_with_usage_error(f"--class_labels gives {len(ids)} labels for --num_images {num_images}: give one "
                              "label, or one per image")
    return ids, num_images


def main(argv=None) -> list:
    args = parse_args(argv)
    steps = args.num_inference_steps or default_num_inference_steps(args.scheduler)

    pipe = load_pipeline_or_exit(args.pipeline).to(args.device)
    labels, num_images = class_labels_or_exit(pipe, args)
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if args.compile:  # last: the compiled U-Net keeps the weights, device and layout it sees now
        compile_for_sampling(pipe.unet)

    # One generator per image: image i is the same whatever --batch_size is.
    with sampling_autocast(args.device, args.mixed_precision):
        samples = generate(pipe, num_images, args.scheduler, steps, args.seed, args.batch_size, labels,
                           args.guidance_scale)
    images = pipe.numpy_to_pil(samples.permute(0, 2, 3, 1).float().numpy())

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, scale=args.grid_scale).save(args.output)
    if args.save_individual:
        folder = Path(args.save_individual)
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            image.save(folder / f"{i:05d}.png")
    print(f"{len(images)} images with {args.scheduler} ({steps} steps) -> {args.output}", file=sys.stderr)
    return images


if __name__ == "__main__":
    main()
