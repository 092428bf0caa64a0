"""Training-step throughput: ``DDPMFromScratchUNet`` vs the equivalent ``UNet2DModel`` (``.to_unet2d()``).

One step = forward, L_simple (MSE between predicted and true noise on x_t = ``add_noise(x_0, ε, t)``,
x_0 ~ U[-1, 1]; the same tensors for both sides, made once outside the timing), backward, the AdamW
step and ``zero_grad``; both networks start from the same seeded weights, in train mode. Reported:
images/s, the FLOPs of one step counted on the eager model, achieved GFLOP/s and its fraction of the
machine's ceiling. ``--compile`` compiles with the package's ``compile_for_training``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ddpm_from_scratch import DDPMFromScratchScheduler
from ddpm_from_scratch.training.step import compile_for_training
from harness import (SIDES, Context, Spec, build_pair, ceiling_gflops, flop_counter_mode, gflops_cell, interleaved,
                     ratio, speed_ratio, spread, throughput)


def training_batch(model, batch: int, ctx: Context) -> tuple:
    """x_t = add_noise(x_0, ε, t) for x_0 ~ U[-1, 1]: the same tensors for both sides."""
    cfg = model.config
    g = torch.Generator().manual_seed(ctx.seed)
    x0 = torch.rand((batch, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    noisy = DDPMFromScratchScheduler().add_noise(x0, noise, t)
    return ctx.layout(noisy.to(ctx.device)), t.to(ctx.device), ctx.layout(noise.to(ctx.device))


def adamw(model) -> torch.optim.Optimizer:
    """The training script's optimiser."""
    try:  # one fused kernel; older torch lacks it on CPU
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)


def train_step_fn(model, data: tuple, ctx: Context) -> Callable[[], None]:
    """One training step of `model` on `data` (from `training_batch`), with its own optimiser."""
    noisy, t, noise = data
    opt = adamw(model)

    def step() -> None:
        with ctx.autocast():
            loss = F.mse_loss(model(noisy, t).sample.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def training_flops(model, data: tuple, ctx: Context) -> int:
    """FLOPs of one training step's forward + loss + backward (the optimiser step is element-wise)."""
    noisy, t, noise = data
    with flop_counter_mode() as counter:
        with ctx.autocast():
            loss = F.mse_loss(model(noisy, t).sample.float(), noise)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def run_training(spec: Spec, ctx: Context, args: argparse.Namespace, ceiling: dict) -> dict:
    """Time `spec.steps` training steps per repetition on each side, interleaved; one entry of "training"."""
    models = build_pair(spec, ctx, train=True)
    data = training_batch(models["ours"], spec.batch, ctx)
    flops = {side: training_flops(models[side], data, ctx) for side in SIDES}  # eager: the same FLOPs compiled
    for side in SIDES:
        if ctx.compiled(side):
            compile_for_training(models[side])
    steps = {side: train_step_fn(models[side], data, ctx) for side in SIDES}
    fns = {side: (lambda s=steps[side]: [s() for _ in range(spec.steps)]) for side in SIDES}
    seconds = interleaved(fns, ctx, args.repeats, args.warmup)
    peak = ceiling_gflops(ceiling, ctx.ceiling_dtype)
    result = dict(label=spec.label, preset=spec.preset, overrides=spec.overrides, batch=spec.batch,
                  steps_per_repetition=spec.steps, image_shape=list(data[0].shape[1:]),
                  parameters=sum(p.numel() for p in models["ours"].parameters()), ceiling_dtype=ctx.ceiling_dtype)
    for side, measured in throughput(seconds, spec.batch * spec.steps, flops, spec.steps, peak).items():
        result[side] = dict(images_per_s=measured.pop("images_per_s"), flops_per_step=flops[side], **measured)
    result["ratio"] = speed_ratio(seconds)
    return result


def table(results: dict) -> list:
    """The markdown lines of the training-step table."""
    ceiling_dtype = results["training"][0]["ceiling_dtype"]
    lines = ["", ("**Training step** (forward + L_simple + backward + AdamW), images/s; ours/theirs > 1: ours "
                  f"faster; achieved GFLOP/s (counted FLOPs / time) and % of the {ceiling_dtype} ceiling"), "",
             "| model | input | batch | ours img/s | theirs img/s | ours/theirs | ours GFLOP/s | theirs GFLOP/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["training"]:
        shape = "×".join(map(str, r["image_shape"]))
        cells = [f"{r['label']} ({r['parameters'] / 1e6:.1f} M)", shape, str(r["batch"]),
                 spread(r["ours"]["images_per_s"]), spread(r["theirs"]["images_per_s"]), ratio(r["ratio"])]
        cells += [gflops_cell(r, s) for s in SIDES]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
