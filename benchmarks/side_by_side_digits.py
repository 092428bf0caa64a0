#!/usr/bin/env python
"""Train the `digits` network as ours and as diffusers' UNet2DModel + DDPMScheduler, evaluate both the same way.

    python benchmarks/side_by_side_digits.py [--steps 2000] [--json benchmarks/side_by_side_digits.json]

Both start from the same weights (`to_unet2d()` of one initialisation), see the same batches,
timesteps and noise, and take their steps interleaved so machine drift hits both alike. Then
both are evaluated with this package's code: bits/dim on the held-out digits (the bound uses
our scheduler's formulas with either network), and the classifier FID/KID of samples from
each side's own pipeline (ours; diffusers' DDPMPipeline with DDPMScheduler).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler
from diffusers.training_utils import EMAModel

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
from ddpm_from_scratch.evaluation.evaluate import bound_summary
from ddpm_from_scratch.likelihood import variational_bound
from ddpm_from_scratch.evaluation.metrics import digit_sample_quality
from harness import save_results, script_machine_info


class Side:
    """One contestant: a network, its noise scheduler, optimiser and EMA, and its accumulated train time."""

    def __init__(self, name: str, unet: torch.nn.Module, scheduler, learning_rate: float):
        self.name, self.unet, self.scheduler = name, unet, scheduler
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=learning_rate, fused=True)
        self.ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, power=3 / 4, foreach=True)
        self.seconds = 0.0
        self.last_loss = float("nan")

    def train_step(self, clean: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, seed: int) -> None:
        torch.manual_seed(seed)  # dropout
        start = time.perf_counter()
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(self.unet(noisy, timesteps).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.unet.parameters())
        self.seconds += time.perf_counter() - start
        self.last_loss = loss.item()

    def ema_unet(self) -> torch.nn.Module:
        self.ema.copy_to(self.unet.parameters())
        return self.unet.eval()


def digit_batches(args):
    """(step, clean digits, timesteps, noise) for each of ``args.steps`` steps: shuffled epochs of the training
    digits in batches of ``args.batch_size``, all drawn from one generator seeded with ``args.seed``."""
    data, _ = load_digits_tensors("train")
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(data), generator=generator)
    position = 0
    for step in range(args.steps):
        if position + args.batch_size > len(order):
            order, position = torch.randperm(len(data), generator=generator), 0
        clean = data[order[position:position + args.batch_size]]
        position += args.batch_size
        timesteps = torch.randint(0, 1000, (len(clean),), generator=generator)
        noise = torch.randn(clean.shape, generator=generator)
        yield step, clean, timesteps, noise


def train(args) -> tuple[Side, Side]:
    torch.manual_seed(args.seed)
    ours_unet = DDPMFromScratchUNet.from_preset("digits")
    theirs_unet = ours_unet.to_unet2d()
    ours = Side("ddpm-from-scratch", ours_unet, DDPMFromScratchScheduler(), args.learning_rate)
    theirs = Side("diffusers UNet2DModel + DDPMScheduler", theirs_unet, DDPMScheduler(), args.learning_rate)
    for step, clean, timesteps, noise in digit_batches(args):
        for side in (ours, theirs) if step % 2 == 0 else (theirs, ours):  # alternate who goes first
            side.train_step(clean, timesteps, noise, seed=args.seed * 100_000 + step)
        if (step + 1) % max(1, args.steps // 10) == 0:
            print(f"step {step + 1}: loss ours {ours.last_loss:.4f}, theirs {theirs.last_loss:.4f}", flush=True)
    return ours, theirs


def evaluate(side: Side, pipeline, args) -> dict:
    images = load_digits_tensors("test")[0][: args.bound_images]
    if isinstance(pipeline, DDPMFromScratchPipeline):
        bound = bound_summary(pipeline, images, args.seed, progress=False)
    else:  # the same bound code, our scheduler's formulas, their network
        result = variational_bound(side.unet, DDPMFromScratchScheduler.from_config(pipeline.scheduler.config),
                                   images, generator=torch.Generator().manual_seed(args.seed), progress=False)
        bound = {"bits_per_dim": result.bits_per_dim.mean().item(),
                 "bits_per_dim_std_error": (result.bits_per_dim.std() / len(images) ** 0.5).item()}
    pipeline.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    samples = pipeline(batch_size=args.samples, generator=torch.Generator().manual_seed(args.seed),
                       num_inference_steps=args.sampling_steps, output_type="pt").images
    sampling_seconds = time.perf_counter() - start
    quality = digit_sample_quality(samples, value_range=(0.0, 1.0), seed=args.seed)
    return {
        "name": side.name,
        "train_seconds": side.seconds,
        "final_loss": side.last_loss,
        "bits_per_dim": bound["bits_per_dim"],
        "bits_per_dim_std_error": bound["bits_per_dim_std_error"],
        "classifier_fid": quality["classifier_fid"],
        "kid_mean": quality["kid_mean"],
        "kid_std": quality["kid_std"],
        "class_histogram": quality["class_histogram"],
        "sampling_seconds": sampling_seconds,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--bound_images", type=int, default=300)
    p.add_argument("--sampling_steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
    args = p.parse_args(argv)

    ours, theirs = train(args)
    rows = [
        evaluate(ours, DDPMFromScratchPipeline(unet=ours.ema_unet(), scheduler=ours.scheduler), args),
        evaluate(theirs, DDPMPipeline(unet=theirs.ema_unet(), scheduler=theirs.scheduler), args),
    ]
    machine = script_machine_info()
    header = (f"digits preset, {args.steps} steps × batch {args.batch_size}, seed {args.seed}; "
              f"{args.samples} samples ({args.sampling_steps} DDPM steps), bound on {args.bound_images} held-out digits; "
              f"{machine['cpu']}, torch {machine['torch']}, "
              f"{time.strftime('%Y-%m-%d')}")
    lines = [header, "", "| | bits/dim | classifier FID | KID | train time | sampling time |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['bits_per_dim']:.3f} ± {row['bits_per_dim_std_error']:.3f} | "
                     f"{row['classifier_fid']:.3f} | {row['kid_mean']:.4f} ± {row['kid_std']:.4f} | "
                     f"{row['train_seconds']:.0f} s | {row['sampling_seconds']:.0f} s |")
    print("\n".join(lines))
    report = {"config": vars(args), "rows": rows, "table": "\n".join(lines), "machine": machine}
    save_results(args.json, report)
    return report


if __name__ == "__main__":
    main()
