"""Time per ``step`` call: ``DDPMFromScratchScheduler`` vs diffusers' ``DDPMScheduler``.

Both set to the same 50-step chain, fed the same sample and model output (0-d timestep tensors, as the
pipelines pass them) and a generator seeded alike; reported: µs per call, the speed-up (theirs' time /
ours) and the largest difference between one step's outputs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from diffusers import DDPMScheduler

from ddpm_from_scratch import DDPMFromScratchScheduler
from harness import SIDES, Context, Plan, interleaved, paired_ratio, ratio, spread, summary

INFERENCE_STEPS = 50


def step_inputs(shape: tuple, ctx: Context) -> tuple:
    """A sample in [-1, 1] and a model output of `shape`, the same for both sides."""
    g = torch.Generator().manual_seed(ctx.seed)
    sample_ = torch.randn(shape, generator=g).clamp(-1, 1)
    return sample_.to(ctx.device), torch.randn(shape, generator=g).to(ctx.device)


def build_schedulers(ctx: Context, steps: int = INFERENCE_STEPS) -> dict:
    """Ours and diffusers' scheduler from our config, both set to a `steps`-step chain."""
    ours = DDPMFromScratchScheduler()
    schedulers = {"ours": ours, "theirs": DDPMScheduler.from_config(ours.config)}
    for s in schedulers.values():
        s.set_timesteps(steps, device=ctx.device)
    return schedulers


def scheduler_calls_fn(scheduler, inputs: tuple, calls: int, ctx: Context) -> Callable[[], None]:
    """`calls` step calls of `scheduler` on `inputs`, cycling through its timesteps."""
    sample_, model_output = inputs
    timesteps = list(scheduler.timesteps)  # 0-d tensors, as the pipelines pass them

    def run() -> None:
        generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
        for i in range(calls):
            scheduler.step(model_output, timesteps[i % len(timesteps)], sample_, generator=generator)

    return run


def run_scheduler_step(plan: Plan, ctx: Context, args: argparse.Namespace) -> dict:
    """Time `plan.step_calls` step calls per repetition on each side, interleaved; the "scheduler_step" entry."""
    schedulers = build_schedulers(ctx)
    inputs = step_inputs(plan.step_shape, ctx)
    fns = {side: scheduler_calls_fn(schedulers[side], inputs, plan.step_calls, ctx) for side in SIDES}
    seconds = interleaved(fns, ctx, args.repeats, args.warmup)
    outputs = {}
    for side in SIDES:
        t = schedulers[side].timesteps[0]
        generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
        outputs[side] = schedulers[side].step(inputs[1], t, inputs[0], generator=generator).prev_sample
    result = dict(shape=list(plan.step_shape), calls_per_repetition=plan.step_calls, inference_steps=INFERENCE_STEPS,
                  max_abs_diff=float((outputs["ours"] - outputs["theirs"]).abs().max()))
    for side in SIDES:
        result[side] = dict(us_per_call=summary([s / plan.step_calls * 1e6 for s in seconds[side]]))
    result["speedup"] = paired_ratio(seconds["theirs"], seconds["ours"])  # theirs' time / ours' (> 1: ours faster)
    return result


def table(results: dict) -> list:
    """The markdown lines of the scheduler-step table."""
    s = results["scheduler_step"]
    return ["", ("**Scheduler step** (DDPMFromScratchScheduler vs DDPMScheduler, "
                 f"{'×'.join(map(str, s['shape']))} float32, {s['inference_steps']}-step chain), µs per call"), "",
            "| ours µs | theirs µs | speed-up (theirs time / ours) | max abs diff |", "|---:|---:|---:|---:|",
            (f"| {spread(s['ours']['us_per_call'])} | {spread(s['theirs']['us_per_call'])} | "
             f"{ratio(s['speedup'])} | {s['max_abs_diff']:.2g} |")]
