#!/usr/bin/env python
"""Bits/dim of a DDPM trained with diffusers' own classes, through its diffusers folder and converted.

    python benchmarks/diffusers_checkpoint_bound.py [--steps 2000] [--output_dir /tmp/diffusers-digits]

Trains diffusers' `UNet2DModel` (its own defaults — cosines-first embedding, freq_shift 0, symmetric
down-sampling padding, 8-wide attention heads — at the `digits` preset's widths) with `DDPMScheduler`
on the training digits for the default budget (2,000 steps × 128, AdamW 1e-3, EMA, L_simple: the
side-by-side benchmark's loop), saves it as a `DDPMPipeline`, then computes the bound on the 300 held-out
digits twice: from the diffusers folder as it is (`DDPMFromScratchPipeline.from_pretrained(folder)`, whose
scheduler is diffusers' `DDPMScheduler`) and from `scripts/convert_from_diffusers.py`'s output. Same
draws for both; the two must agree to 1e-6.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from ddpm_from_scratch import DDPMFromScratchPipeline
from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
import side_by_side_digits as side_by_side
from harness import save_results, script_machine_info

HERE = Path(__file__).resolve().parent


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--bound_images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default="/tmp/diffusers-digits")
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
    args = p.parse_args(argv)
    convert = _module(HERE.parent / "scripts" / "convert_from_diffusers.py", "convert_from_diffusers").convert

    torch.manual_seed(args.seed)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       layers_per_block=2, norm_num_groups=32, dropout=0.1)
    side = side_by_side.Side("diffusers UNet2DModel + DDPMScheduler", unet, DDPMScheduler(), args.learning_rate)
    for step, clean, timesteps, noise in side_by_side.digit_batches(args):
        side.train_step(clean, timesteps, noise, seed=args.seed * 100_000 + step)
        if (step + 1) % max(1, args.steps // 10) == 0:
            print(f"step {step + 1}: loss {side.last_loss:.4f}", flush=True)
    output = Path(args.output_dir)
    DDPMPipeline(unet=side.ema_unet(), scheduler=side.scheduler).save_pretrained(output / "diffusers")
    convert(str(output / "diffusers"), output / "converted", overwrite=True)

    images = load_digits_tensors("test")[0][: args.bound_images]
    rows = {}
    for name in ("diffusers", "converted"):
        pipeline = DDPMFromScratchPipeline.from_pretrained(output / name)
        start = time.perf_counter()
        bound = pipeline.variational_bound(images, generator=torch.Generator().manual_seed(args.seed), progress=False)
        rows[name] = {"scheduler": type(pipeline.scheduler).__name__, "unet": type(pipeline.unet).__name__,
                      "bits_per_dim": bound.bits_per_dim.mean().item(),
                      "bits_per_dim_std_error": (bound.bits_per_dim.std() / len(images) ** 0.5).item(),
                      "per_image": bound.bits_per_dim, "seconds": time.perf_counter() - start}
    difference = (rows["diffusers"].pop("per_image") - rows["converted"].pop("per_image")).abs()
    report = {"config": vars(args), "train_seconds": side.seconds, "rows": rows,
              "max_abs_difference_per_image": difference.max().item(),
              "mean_abs_difference": abs(rows["diffusers"]["bits_per_dim"] - rows["converted"]["bits_per_dim"]),
              "machine": script_machine_info()}
    print(json.dumps(report, indent=2))
    save_results(args.json, report)
    return report


if __name__ == "__main__":
    main()
