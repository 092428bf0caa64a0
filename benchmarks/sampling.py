"""Sampling throughput: ``DDPMFromScratchPipeline`` vs diffusers' ``DDPMPipeline``.

Same weights (``to_unet2d()``), ``DDPMScheduler.from_config`` of our scheduler's config, the same
``torch.Generator`` seed for each call, both models in eval mode, ``output_type="np"``. Reported:
images/s, achieved GFLOP/s of the U-Net forwards (the scheduler's element-wise step is not counted),
and the largest difference between the two pipelines' images, which must be <= ``IMAGES_TOLERANCE``.
Under bf16 (``--mixed_precision bf16``, or CUDA) that check is made on an extra run in strict float32
and the bf16 difference is kept as ``max_abs_diff_bf16``. ``--compile`` compiles with the package's
``compile_for_sampling`` (frozen weights).
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler
from ddpm_from_scratch.sampling.fast import compile_for_sampling
from harness import (SIDES, Context, Spec, build_pair, ceiling_gflops, flop_counter_mode, gflops_cell, interleaved,
                     ratio, speed_ratio, spread, throughput)

IMAGES_TOLERANCE = 1e-3


def build_pipelines(spec: Spec, ctx: Context) -> dict:
    """Both pipelines around the seeded pair of U-Nets, progress bars off."""
    models = build_pair(spec, ctx, train=False)
    ours_scheduler = DDPMFromScratchScheduler()
    pipes = {
        "ours": DDPMFromScratchPipeline(unet=models["ours"], scheduler=ours_scheduler),
        "theirs": DDPMPipeline(unet=models["theirs"], scheduler=DDPMScheduler.from_config(ours_scheduler.config)),
    }
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def sample(pipe, batch: int, steps: int, ctx: Context, autocast: bool = True) -> np.ndarray:
    """`batch` images from `pipe` in `steps` denoising steps, from the context's seed."""
    generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
    with ctx.autocast() if autocast else nullcontext():
        return pipe(batch_size=batch, generator=generator, num_inference_steps=steps, output_type="np").images


def sampling_flops(pipe, batch: int, ctx: Context) -> int:
    """FLOPs of one denoising step: a U-Net forward on the batch (the scheduler step is element-wise)."""
    cfg = pipe.unet.config
    x = torch.zeros((batch, cfg.in_channels, cfg.sample_size, cfg.sample_size), device=ctx.device)
    with flop_counter_mode() as counter:
        with torch.no_grad(), ctx.autocast():
            pipe.unet(ctx.layout(x), torch.tensor(500, device=ctx.device))
    return int(counter.get_total_flops())


def run_sampling(spec: Spec, ctx: Context, args: argparse.Namespace, ceiling: dict) -> dict:
    """Time one `spec.steps`-step sampling run per repetition on each side, interleaved, and compare the
    images; one entry of "sampling"."""
    pipes = build_pipelines(spec, ctx)
    flops = sampling_flops(pipes["ours"], spec.batch, ctx)  # eager: the same FLOPs compiled, and for theirs
    for side in SIDES:
        if ctx.compiled(side):
            compile_for_sampling(pipes[side].unet)
    images = {}
    tolerance = IMAGES_TOLERANCE

    def fn(side):
        return lambda: images.__setitem__(side, sample(pipes[side], spec.batch, spec.steps, ctx))

    seconds = interleaved({side: fn(side) for side in SIDES}, ctx, args.repeats, args.warmup)
    peak = ceiling_gflops(ceiling, ctx.ceiling_dtype)
    result = dict(label=spec.label, preset=spec.preset, overrides=spec.overrides, batch=spec.batch,
                  steps=spec.steps, tolerance=tolerance, flops_per_step=flops, ceiling_dtype=ctx.ceiling_dtype)
    result.update(throughput(seconds, spec.batch, {side: flops for side in SIDES}, spec.steps, peak))
    result["ratio"] = speed_ratio(seconds)
    if ctx.bf16:  # the check in strict float32 (no autocast, no TF32); the bf16 difference for information
        result["max_abs_diff_bf16"] = float(np.abs(images["ours"] - images["theirs"]).max())
        flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            images = {side: sample(pipes[side], spec.batch, spec.steps, ctx, autocast=False) for side in SIDES}
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    result["max_abs_diff"] = float(np.abs(images["ours"] - images["theirs"]).max())
    result["match"] = bool(result["max_abs_diff"] <= tolerance)
    return result


def table(results: dict) -> list:
    """The markdown lines of the sampling table."""
    tolerance = results["sampling"][0]["tolerance"]
    lines = ["", (f"**Sampling** (DDPMFromScratchPipeline vs DDPMPipeline, same weights, seed and scheduler "
              f"config), images/s; ours/theirs > 1: ours faster; images must match within {tolerance:g}; "
              "achieved GFLOP/s of the U-Net forwards and % of the ceiling"), "",
             "| model | batch | steps | ours img/s | theirs img/s | ours/theirs | ours GFLOP/s | theirs GFLOP/s "
             "| max abs diff | match |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["sampling"]:
        match = "yes" if r["match"] else f"**NO (> {r['tolerance']:g})**"
        lines.append("| " + " | ".join([
            r["label"], str(r["batch"]), str(r["steps"]), spread(r["ours"]["images_per_s"]),
            spread(r["theirs"]["images_per_s"]), ratio(r["ratio"]), *[gflops_cell(r, s) for s in SIDES],
            f"{r['max_abs_diff']:.2g}", match]) + " |")
    return lines
