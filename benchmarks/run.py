#!/usr/bin/env python
"""Benchmark ddpm-from-scratch against the diffusers classes it reimplements.

    python benchmarks/run.py [--repeats N] [--warmup N] [--quick] [--json PATH]
                             [--device cpu|cuda] [--channels_last]
                             [--compile none|ours|both] [--mixed_precision no|bf16]

Side by side, in one process, with the same weights, inputs and seeds:

1. training step throughput (images/s; forward + L_simple loss + backward + AdamW step) of
   ``DDPMFromScratchUNet`` and the equivalent ``UNet2DModel`` (``.to_unet2d()``): ``training_step.py``;
2. sampling throughput (images/s) of ``DDPMFromScratchPipeline`` and diffusers' ``DDPMPipeline``
   (same weights, ``DDPMScheduler.from_config`` of our scheduler's config, same generator), plus
   the largest difference between the two pipelines' images (must be <= 1e-3): ``sampling.py``;
3. time per ``step`` call (µs) of ``DDPMFromScratchScheduler`` and ``DDPMScheduler``: ``scheduler_step.py``;
4. peak memory of every workload above, for each side: ``peak_memory.py``;
5. the machine's ceiling (GFLOP/s of a large matrix product, through BLAS and through oneDNN) and
   each training and sampling run's achieved GFLOP/s as a fraction of it: ``harness.py``, which also
   holds the timing method (interleaved repetitions, medians, paired ratios).

This file is the runner: the options, the plan (sizes per mode and device), the sections in order,
the markdown table and the JSON.

Opt-in fast paths. ``--compile ours`` compiles our U-Net the way the scripts' ``--compile`` does
(``compile_for_training`` for the training step, ``compile_for_sampling`` — frozen weights — for
the pipeline), so the ratio is "our opt-in path vs diffusers as it comes"; ``--compile both``
compiles diffusers' UNet2DModel the same way, for the like-for-like ratio. Compilation happens in
the warm-up repetition (at least one is required). ``--mixed_precision bf16`` runs both sides under
bf16 autocast on the CPU (always on CUDA); the sampled images are then compared to a looser
tolerance. The memory section always measures the eager float32 models.

Run this file as a script (a fresh process): the forks of the memory section must come before the
process's first parallel (OpenMP) computation, after which a forked child can deadlock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

import peak_memory
import sampling
import scheduler_step
import training_step
from harness import (Context, Plan, Spec, machine_info, refresh_fractions, run_ceiling, save_results, say,
                     spread)

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"
SECTIONS = ("memory", "training", "sampling", "scheduler")

# A CIFAR-shaped (3×32×32) network small enough for the smoke test: two levels, one block each.
TINY_CIFAR = dict(base_channels=32, channel_multipliers=(1, 2), num_res_blocks=1)


def make_plan(quick: bool, cuda: bool, sample_steps: int | None) -> Plan:
    """The workloads: tiny ones for --quick, else sized for the device; `sample_steps` overrides every
    sampling run's step count."""
    if quick:
        plan = Plan(
            train=[Spec("digits", "digits", 8, 1), Spec("cifar-tiny", "ddpm-cifar10", 2, 1, TINY_CIFAR)],
            sample=[Spec("digits", "digits", 4, 5), Spec("cifar-tiny", "ddpm-cifar10", 2, 5, TINY_CIFAR)],
            step_calls=20,
            matmul_n=256,
            matmul_calls=2,
        )
    elif cuda:
        plan = Plan(
            train=[Spec("digits", "digits", 128, 20), Spec("ddpm-cifar10", "ddpm-cifar10", 128, 5)],
            sample=[Spec("digits", "digits", 256, 100), Spec("ddpm-cifar10", "ddpm-cifar10", 64, 100)],
            matmul_n=4096,
            matmul_calls=20,
        )
    else:
        plan = Plan(
            train=[Spec("digits", "digits", 128, 5), Spec("ddpm-cifar10", "ddpm-cifar10", 16, 1)],
            sample=[Spec("digits", "digits", 64, 100), Spec("ddpm-cifar10", "ddpm-cifar10", 4, 50)],
        )
    if sample_steps:
        plan = Plan(**{**plan.__dict__, "sample": [Spec(s.label, s.preset, s.batch, sample_steps, s.overrides)
                                                    for s in plan.sample]})
    return plan


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


LIBRARY_NAMES = {"blas": "torch.mm (BLAS)", "onednn": "oneDNN (1×1 conv)"}

# Each results key with the module whose table() renders it, in the table's order.
TABLES = (("training", training_step), ("sampling", sampling), ("scheduler_step", scheduler_step),
          ("memory", peak_memory))


def compile_note(compile_: str) -> str:
    return {"none": "", "ours": ", ours compiled (theirs eager)", "both": ", both compiled"}[compile_]


def markdown(results: dict) -> str:
    """The whole table: the machine and method header, the ceiling, then each section's table."""
    m, settings = results["machine"], results["settings"]
    load = ", ".join(f"{x:.2f}" for x in m["load_average"]) if m.get("load_average") else "n/a"
    lines = [
        f"### ddpm-from-scratch vs diffusers {m['diffusers']} — {m['date']}",
        "",
        (f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, "
        f"{m['torch_threads']} torch threads; device {m['device']} ({m['device_name']}), {m['precision']}"
        f"{', channels_last' if m['channels_last'] else ''}{compile_note(m.get('compile', 'none'))}; "
        f"torch {m['torch']}, Python {m['python']}; "
        f"load average at start {load}."),
        (f"Median of {settings['repeats']} repetitions after {settings['warmup']} warm-up, ours and theirs "
        "interleaved (order alternating); (min–max) in brackets; ratios are medians of per-repetition ratios"
        f"{'; QUICK smoke mode (tiny sizes, numbers meaningless)' if settings['quick'] else ''}."),
        "",
    ]
    ceiling = results["ceiling"]
    lines.append("**Machine ceiling** (n×n matrix product; the faster library is the ceiling), GFLOP/s at the "
                 "start / at the end: " + "; ".join(
                     f"{c['dtype']} {LIBRARY_NAMES[c['library']]} n={c['n']}: {spread(c['gflops'])} / "
                     f"{spread(c['gflops_end'])}" for c in ceiling.values()))
    for key, module in TABLES:
        if results.get(key):
            lines += module.table(results)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def sections_list(text: str) -> list:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(SECTIONS)}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="Timed repetitions per side (default 5).")
    p.add_argument("--warmup", type=int, default=1, help="Discarded repetitions per side first (default 1).")
    p.add_argument("--quick", action="store_true", help="Smoke mode: tiny models, batches and counts.")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"Where the results go (default {DEFAULT_JSON}).")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels_last", action="store_true", help="Both models and their inputs in channels_last.")
    p.add_argument("--compile", choices=["none", "ours", "both"], default="none",
                   help="Compile our U-Net (ours) or both U-Nets (both) as the scripts' --compile does.")
    p.add_argument("--mixed_precision", choices=["no", "bf16"], default="no",
                   help="bf16 autocast on both sides (CPU; CUDA always uses it).")
    p.add_argument("--sections", type=sections_list, default=list(SECTIONS),
                   help=f"Comma-separated subset of {','.join(SECTIONS)} (default: all; the ceiling always runs).")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    p.add_argument("--sample_steps", type=int, default=None, help="Override every sampling run's step count.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.compile != "none" and args.warmup < 1:
        p.error("--compile needs --warmup >= 1: the first repetition compiles")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(torch.device(args.device), args.seed, args.channels_last, args.compile, args.mixed_precision)
    plan = make_plan(args.quick, ctx.cuda, args.sample_steps)
    results = {"machine": machine_info(ctx), "settings": dict(
        repeats=args.repeats, warmup=args.warmup, quick=args.quick, seed=args.seed, device=args.device,
        channels_last=args.channels_last, compile=args.compile, mixed_precision=args.mixed_precision,
        sections=args.sections,
        threads=torch.get_num_threads(), plan=json.loads(
            json.dumps(plan.__dict__, default=lambda o: o.__dict__)))}

    # Memory first: on CPU its children are forked before this process computes anything.
    if "memory" in args.sections:
        say("peak memory")
        results["memory"] = peak_memory.measure_memory(
            plan, dataclasses.replace(ctx, compile="none", mixed_precision="no"))
    say("machine ceiling")
    results["ceiling"] = run_ceiling(plan, ctx, args)
    if "training" in args.sections:
        results["training"] = []
        for spec in plan.train:
            say(f"training {spec.label}, batch {spec.batch}")
            results["training"].append(training_step.run_training(spec, ctx, args, results["ceiling"]))
    if "sampling" in args.sections:
        results["sampling"] = []
        for spec in plan.sample:
            say(f"sampling {spec.label}, batch {spec.batch}, {spec.steps} steps")
            results["sampling"].append(sampling.run_sampling(spec, ctx, args, results["ceiling"]))
    if "scheduler" in args.sections:
        say("scheduler step")
        results["scheduler_step"] = scheduler_step.run_scheduler_step(plan, ctx, args)
    say("machine ceiling, again")
    results["ceiling"] = run_ceiling(plan, ctx, args, before=results["ceiling"])
    refresh_fractions(results)

    results["table"] = markdown(results)
    print(results["table"])
    save_results(args.json, results)
    say(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
