#!/usr/bin/env python
"""Benchmark ddpm-from-scratch against the diffusers classes it reimplements.

    python benchmarks/run.py [--repeats N] [--warmup N] [--quick] [--json PATH]
                             [--device cpu|cuda] [--channels_last]
                             [--compile none|ours|both] [--mixed_precision no|bf16]

Side by side, in one process, with the same weights, inputs and seeds:

1. training step throughput (images/s; forward + L_simple loss + backward + AdamW step) of
   ``DDPMFromScratchUNet`` and the equivalent ``UNet2DModel`` (``.to_unet2d()``);
2. sampling throughput (images/s) of ``DDPMFromScratchPipeline`` and diffusers' ``DDPMPipeline``
   (same weights, ``DDPMScheduler.from_config`` of our scheduler's config, same generator), plus
   the largest difference between the two pipelines' images (must be <= 1e-3);
3. time per ``step`` call (µs) of ``DDPMFromScratchScheduler`` and ``DDPMScheduler``;
4. peak memory of every workload above, for each side;
5. the machine's ceiling (GFLOP/s of a large matrix product, through BLAS and through oneDNN) and
   each training and sampling run's achieved GFLOP/s as a fraction of it.

Method. Every timed workload runs interleaved: each repetition times ours and theirs back to back,
the order alternating between repetitions (ours-theirs, theirs-ours, ...), so slow drift of the
machine (thermal, other tenants) hits both sides alike. ``--warmup`` repetitions run first and are
discarded. Reported: the median over ``--repeats`` repetitions with min–max (the JSON also has the
quartiles and every sample); ratios are medians of the per-repetition (paired) ratios. On CUDA the
models run under bf16 autocast and every timing is bracketed by ``torch.cuda.synchronize()``.

FLOPs of one training step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix
products, convolutions and attention, forward and backward; element-wise work such as GroupNorm,
SiLU or the optimiser is not counted), so "achieved GFLOP/s" is counted FLOPs / measured time.

Peak memory. CPU: every (workload, side) runs in its own process forked from this one before it
has computed anything (so each child starts from the same small, clean heap). The child builds
both models (as the timed runs do), keeps its side's, resets the kernel's peak-RSS counter
(``echo 5 > /proc/self/clear_refs``), reads ``VmRSS`` as the baseline, runs two training steps /
a two-step sampling run / 20 scheduler steps and reads ``VmHWM``. Reported: the peak growth over
the baseline (activations, gradients, optimiser state, temporaries; not the weights), and the
baseline itself. CUDA: the same, in process, with ``torch.cuda.reset_peak_memory_stats`` and
``memory_allocated`` / ``max_memory_allocated``.

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
import datetime
import gc
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler
from torch.utils import flop_counter

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.sampling.fast import compile_for_sampling
from ddpm_from_scratch.training.step import compile_for_training

SIDES = ("ours", "theirs")
IMAGES_TOLERANCE = 1e-3
DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"
MIB = 2**20


# --------------------------------------------------------------------------------------
# What runs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One model workload: a preset (with config overrides), a batch and a step count
    (optimiser steps per repetition for training, denoising steps for sampling)."""

    label: str
    preset: str
    batch: int
    steps: int
    overrides: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Plan:
    train: list
    sample: list
    step_shape: tuple = (16, 3, 32, 32)
    step_calls: int = 500  # scheduler.step calls per repetition
    matmul_n: int = 2048
    matmul_calls: int = 5


# A CIFAR-shaped (3×32×32) network small enough for the smoke test: two levels, one block each.
TINY_CIFAR = dict(base_channels=32, channel_multipliers=(1, 2), num_res_blocks=1)


def make_plan(quick: bool, cuda: bool, sample_steps: int | None) -> Plan:
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


@dataclass
class Context:
    device: torch.device
    seed: int
    channels_last: bool
    compile: str = "none"  # none | ours | both
    mixed_precision: str = "no"  # no | bf16 (CPU); CUDA always runs bf16

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def bf16(self) -> bool:
        return self.cuda or self.mixed_precision == "bf16"

    def compiled(self, side: str) -> bool:
        return self.compile == "both" or (self.compile == "ours" and side == "ours")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


def build_pair(spec: Spec, ctx: Context, train: bool) -> dict:
    """Ours from the preset (seeded), theirs = ours.to_unet2d(): same architecture, same weights."""
    torch.manual_seed(ctx.seed)
    ours = DDPMFromScratchUNet.from_preset(spec.preset, **spec.overrides)
    pair = {"ours": ours, "theirs": ours.to_unet2d()}
    for model in pair.values():
        model.to(ctx.device).train(train)
        if ctx.channels_last:
            model.to(memory_format=torch.channels_last)
    return pair


def training_batch(model, batch: int, ctx: Context):
    """x_t = add_noise(x_0, ε, t) for x_0 ~ U[-1, 1]: the same tensors for both sides."""
    cfg = model.config
    g = torch.Generator().manual_seed(ctx.seed)
    x0 = torch.rand((batch, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    noisy = DDPMFromScratchScheduler().add_noise(x0, noise, t)
    return ctx.layout(noisy.to(ctx.device)), t.to(ctx.device), ctx.layout(noise.to(ctx.device))


def adamw(model) -> torch.optim.Optimizer:
    try:  # the training script's optimiser (one fused kernel); older torch lacks it on CPU
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)


def train_step_fn(model, data, ctx: Context) -> Callable[[], None]:
    noisy, t, noise = data
    opt = adamw(model)

    def step() -> None:
        with ctx.autocast():
            loss = F.mse_loss(model(noisy, t).sample.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def build_pipelines(spec: Spec, ctx: Context) -> dict:
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
    generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
    with ctx.autocast() if autocast else nullcontext():
        return pipe(batch_size=batch, generator=generator, num_inference_steps=steps, output_type="np").images


def step_inputs(shape, ctx: Context):
    g = torch.Generator().manual_seed(ctx.seed)
    sample_ = torch.randn(shape, generator=g).clamp(-1, 1)
    return sample_.to(ctx.device), torch.randn(shape, generator=g).to(ctx.device)


def build_schedulers(ctx: Context, steps: int = 50) -> dict:
    ours = DDPMFromScratchScheduler()
    schedulers = {"ours": ours, "theirs": DDPMScheduler.from_config(ours.config)}
    for s in schedulers.values():
        s.set_timesteps(steps, device=ctx.device)
    return schedulers


def scheduler_calls_fn(scheduler, inputs, calls: int, ctx: Context) -> Callable[[], None]:
    sample_, model_output = inputs
    timesteps = list(scheduler.timesteps)  # 0-d tensors, as the pipelines pass them

    def run() -> None:
        generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
        for i in range(calls):
            scheduler.step(model_output, timesteps[i % len(timesteps)], sample_, generator=generator)

    return run


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], ctx: Context) -> float:
    ctx.sync()
    start = time.perf_counter()
    fn()
    ctx.sync()
    return time.perf_counter() - start


def interleaved(fns: dict, ctx: Context, repeats: int, warmup: int) -> dict:
    """Seconds per repetition for each side, timed alternately (the order flips every repetition)."""
    seconds = {side: [] for side in SIDES}
    for r in range(warmup + repeats):
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            elapsed = timed(fns[side], ctx)
            if r >= warmup:
                seconds[side].append(elapsed)
    return seconds


def summary(samples) -> dict:
    xs = sorted(float(x) for x in samples)
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return dict(median=statistics.median(xs), min=xs[0], max=xs[-1], q1=q1, q3=q3, n=len(xs), samples=xs)


def paired_ratio(ours, theirs) -> dict:
    return summary([a / b for a, b in zip(ours, theirs)])


def matmul_ceiling(ctx: Context, n: int, calls: int, dtype: torch.dtype, repeats: int, library: str = "blas") -> list:
    """GFLOP/s of an n×n by n×n matrix product, `calls` per repetition.

    ``library="blas"``: ``torch.mm`` (MKL / OpenBLAS on a CPU, cuBLAS on CUDA). ``"onednn"`` (CPU): the
    same product as a 1×1 convolution over n channels-last positions, which oneDNN — the library the
    U-Nets' convolutions run in — computes. On AMD CPUs MKL's matrix product does not use AVX-512
    and reaches about half of what oneDNN does, so the BLAS number alone understates the machine.
    """
    g = torch.Generator().manual_seed(ctx.seed)
    if library == "onednn":
        x = torch.randn(1, n, n, 1, generator=g).to(ctx.device, dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(n, n, 1, 1, generator=g).to(ctx.device, dtype)

        def run() -> None:
            for _ in range(calls):
                F.conv2d(x, w)
    else:
        a, b = (torch.randn(n, n, generator=g).to(ctx.device, dtype) for _ in range(2))
        out = torch.empty_like(a)

        def run() -> None:
            for _ in range(calls):
                torch.mm(a, b, out=out)

    run()  # warm-up
    return [2 * n**3 * calls / timed(run, ctx) / 1e9 for _ in range(repeats)]


def _cpu_sdpa_mapping() -> dict:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU one (torch <= 2.13)."""
    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    registered = getattr(flop_counter, "flop_registry", {})
    mapping = {}
    if not hasattr(flop_counter, "sdpa_flop_count") or not hasattr(flop_counter, "sdpa_backward_flop_count"):
        return mapping
    if forward is not None and forward.default not in registered:
        mapping[forward] = lambda q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v)
    if backward is not None and backward.default not in registered:
        mapping[backward] = lambda g, q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_backward_flop_count(
            g, q, k, v)
    return mapping


def training_flops(model, data, ctx: Context) -> int:
    """FLOPs of one training step's forward + loss + backward (the optimiser step is element-wise)."""
    noisy, t, noise = data
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping()) as counter:
        with ctx.autocast():
            loss = F.mse_loss(model(noisy, t).sample.float(), noise)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def sampling_flops(pipe, batch: int, ctx: Context) -> int:
    """FLOPs of one denoising step: a U-Net forward on the batch (the scheduler step is element-wise)."""
    cfg = pipe.unet.config
    x = torch.zeros((batch, cfg.in_channels, cfg.sample_size, cfg.sample_size), device=ctx.device)
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping()) as counter:
        with torch.no_grad(), ctx.autocast():
            pipe.unet(ctx.layout(x), torch.tensor(500, device=ctx.device))
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------


def _proc_status_kib(*keys: str) -> dict:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                values[key] = int(rest.split()[0])
    return values


class MemoryProbe:
    """Peak memory growth from `start()` to `stop()`: resident set on CPU, allocator on CUDA.

    On CPU the kernel keeps one peak, VmHWM, of the whole resident set, which also counts the
    pages of library code a workload touches for the first time (≈20 MiB, the same for both
    sides). File-backed pages only accumulate, so VmHWM − RssFile − RssShmem read at the end is
    the anonymous (heap) memory at the peak, to within the few file pages touched after it; its
    growth over the anonymous baseline is reported as `delta_mib`, the raw VmHWM − VmRSS
    growth as `rss_delta_mib`.
    """

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.note = None

    def start(self) -> None:
        gc.collect()
        if self.ctx.cuda:
            self.ctx.sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.ctx.device)
            self.baseline = torch.cuda.memory_allocated(self.ctx.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set (Linux >= 4.0)
        except OSError as error:
            self.note = f"VmHWM not resettable ({error}): the peak may include the model build"
        self.baseline = _proc_status_kib("VmRSS", "RssAnon")

    def stop(self) -> dict:
        if self.ctx.cuda:
            self.ctx.sync()
            peak = torch.cuda.max_memory_allocated(self.ctx.device)
            result = dict(delta_mib=(peak - self.baseline) / MIB, baseline_mib=self.baseline / MIB, peak_mib=peak / MIB)
        else:
            end = _proc_status_kib("VmHWM", "RssFile", "RssShmem")
            peak_anon = end["VmHWM"] - end["RssFile"] - end.get("RssShmem", 0)
            result = dict(
                delta_mib=(peak_anon - self.baseline["RssAnon"]) / 1024,
                rss_delta_mib=(end["VmHWM"] - self.baseline["VmRSS"]) / 1024,
                baseline_mib=self.baseline["VmRSS"] / 1024,
                peak_rss_mib=end["VmHWM"] / 1024,
            )
        if self.note:
            result["note"] = self.note
        return result


def memory_of(kind: str, spec, side: str, ctx: Context) -> dict:
    """Build both sides as the timed runs do, keep `side`'s, and measure its workload's peak."""
    probe = MemoryProbe(ctx)
    if kind == "train":
        models = build_pair(spec, ctx, train=True)
        model = models.pop(side)
        del models
        data = training_batch(model, spec.batch, ctx)
        step = train_step_fn(model, data, ctx)
        probe.start()
        for _ in range(2):  # the second step has the optimiser state as well as the activations
            step()
    elif kind == "sample":
        pipes = build_pipelines(spec, ctx)
        pipe = pipes.pop(side)
        del pipes
        probe.start()
        sample(pipe, spec.batch, 2, ctx)
    else:
        scheduler = build_schedulers(ctx)[side]
        inputs = step_inputs(spec, ctx)
        run = scheduler_calls_fn(scheduler, inputs, 20, ctx)
        probe.start()
        run()
    return probe.stop()


def in_forked_child(fn: Callable[[], dict], timeout_s: int = 900) -> dict:
    """Run `fn` in a forked child process and return its (JSON-able) result."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_end)
        signal.alarm(timeout_s)  # a hung child dies rather than hanging the benchmark
        try:
            payload = {"result": fn()}
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            payload = {"error": f"{type(error).__name__}: {error}"}
        with os.fdopen(write_end, "w") as f:
            json.dump(payload, f)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    if not text:
        return {"error": f"child exited with status {status} and no result"}
    payload = json.loads(text)
    return payload.get("result") or {"error": payload.get("error")}


def measure_memory(plan: Plan, ctx: Context) -> dict:
    jobs = [("train", s, f"train {s.label} b{s.batch}") for s in plan.train]
    jobs += [("sample", s, f"sample {s.label} b{s.batch}") for s in plan.sample]
    jobs += [("step", plan.step_shape, f"scheduler.step {'×'.join(map(str, plan.step_shape))}")]
    entries = []
    for kind, spec, label in jobs:
        entry = {"workload": label}
        for side in SIDES:
            if ctx.cuda:
                entry[side] = memory_of(kind, spec, side, ctx)
            else:
                entry[side] = in_forked_child(lambda k=kind, sp=spec, sd=side: memory_of(k, sp, sd, ctx))
            gc.collect()
        ours, theirs = entry["ours"].get("delta_mib"), entry["theirs"].get("delta_mib")
        entry["ratio"] = ours / theirs if ours is not None and theirs else None
        entries.append(entry)
    method = (
        "torch.cuda.max_memory_allocated - memory_allocated after reset_peak_memory_stats, in process"
        if ctx.cuda
        else "anonymous resident memory at the VmHWM peak (VmHWM - RssFile - RssShmem, /proc/self/status) minus "
        "RssAnon after the model build, in a child forked per workload and side, the peak counter reset via "
        "/proc/self/clear_refs"
    )
    return {"method": method, "unit": "MiB", "what": "peak growth over the post-build baseline (weights excluded)",
            "entries": entries}


# --------------------------------------------------------------------------------------
# The sections
# --------------------------------------------------------------------------------------


def run_training(spec: Spec, ctx: Context, args, ceiling: dict) -> dict:
    models = build_pair(spec, ctx, train=True)
    data = training_batch(models["ours"], spec.batch, ctx)
    flops = {side: training_flops(models[side], data, ctx) for side in SIDES}  # eager: the same FLOPs compiled
    for side in SIDES:
        if ctx.compiled(side):
            compile_for_training(models[side])
    steps = {side: train_step_fn(models[side], data, ctx) for side in SIDES}
    fns = {side: (lambda s=steps[side]: [s() for _ in range(spec.steps)]) for side in SIDES}
    seconds = interleaved(fns, ctx, args.repeats, args.warmup)
    ceiling_dtype = "bfloat16" if ctx.bf16 else "float32"
    peak = ceiling_gflops(ceiling, ceiling_dtype)
    result = dict(label=spec.label, preset=spec.preset, overrides=spec.overrides, batch=spec.batch,
                  steps_per_repetition=spec.steps, image_shape=list(data[0].shape[1:]),
                  parameters=sum(p.numel() for p in models["ours"].parameters()), ceiling_dtype=ceiling_dtype)
    for side in SIDES:
        gflops = [flops[side] * spec.steps / s / 1e9 for s in seconds[side]]
        result[side] = dict(
            images_per_s=summary([spec.batch * spec.steps / s for s in seconds[side]]),
            flops_per_step=flops[side],
            gflops=summary(gflops),
            fraction_of_ceiling=statistics.median(gflops) / peak,
        )
    result["ratio"] = paired_ratio([1 / s for s in seconds["ours"]], [1 / s for s in seconds["theirs"]])
    return result


def run_sampling(spec: Spec, ctx: Context, args, ceiling: dict) -> dict:
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
    ceiling_dtype = "bfloat16" if ctx.bf16 else "float32"
    peak = ceiling_gflops(ceiling, ceiling_dtype)
    result = dict(label=spec.label, preset=spec.preset, overrides=spec.overrides, batch=spec.batch,
                  steps=spec.steps, tolerance=tolerance, flops_per_step=flops, ceiling_dtype=ceiling_dtype)
    for side in SIDES:
        gflops = [flops * spec.steps / s / 1e9 for s in seconds[side]]
        result[side] = dict(images_per_s=summary([spec.batch / s for s in seconds[side]]), gflops=summary(gflops),
                            fraction_of_ceiling=statistics.median(gflops) / peak)
    result["ratio"] = paired_ratio([1 / s for s in seconds["ours"]], [1 / s for s in seconds["theirs"]])
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


def run_scheduler_step(plan: Plan, ctx: Context, args) -> dict:
    schedulers = build_schedulers(ctx)
    inputs = step_inputs(plan.step_shape, ctx)
    fns = {side: scheduler_calls_fn(schedulers[side], inputs, plan.step_calls, ctx) for side in SIDES}
    seconds = interleaved(fns, ctx, args.repeats, args.warmup)
    outputs = {}
    for side in SIDES:
        t = schedulers[side].timesteps[0]
        generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
        outputs[side] = schedulers[side].step(inputs[1], t, inputs[0], generator=generator).prev_sample
    result = dict(shape=list(plan.step_shape), calls_per_repetition=plan.step_calls, inference_steps=50,
                  max_abs_diff=float((outputs["ours"] - outputs["theirs"]).abs().max()))
    for side in SIDES:
        result[side] = dict(us_per_call=summary([s / plan.step_calls * 1e6 for s in seconds[side]]))
    result["speedup"] = paired_ratio(seconds["theirs"], seconds["ours"])  # theirs' time / ours' (> 1: ours faster)
    return result


def ceiling_gflops(ceiling: dict, dtype: str) -> float:
    """The machine's ceiling for `dtype`: the fastest median over the libraries' matrix products and the
    start / end measurements (a busy moment of a shared machine lowers a ceiling, never raises it)."""
    return max(max(c["gflops"]["median"], c.get("gflops_end", {}).get("median", 0.0))
               for c in ceiling.values() if c["dtype"] == dtype)


def refresh_fractions(results: dict) -> None:
    """Recompute every fraction of the ceiling once the end-of-run ceiling is known."""
    for run in results.get("training", []) + results.get("sampling", []):
        peak = ceiling_gflops(results["ceiling"], run["ceiling_dtype"])
        for side in SIDES:
            run[side]["fraction_of_ceiling"] = run[side]["gflops"]["median"] / peak


def run_ceiling(plan: Plan, ctx: Context, args, before: dict | None = None) -> dict:
    """GFLOP/s of an n×n matrix product (float32; bfloat16 too under bf16), through BLAS and, on a CPU,
    through oneDNN. Measured at the start (`gflops`, used for the fractions) and again at the end
    (`gflops_end`, to show drift)."""
    dtypes = [torch.float32] + ([torch.bfloat16] if ctx.bf16 else [])
    libraries = ["blas"] + ([] if ctx.cuda else ["onednn"])
    result = {}
    for dtype, library in [(d, lib) for d in dtypes for lib in libraries]:
        dtype_name = str(dtype).replace("torch.", "")
        name = dtype_name if library == "blas" else f"{dtype_name}_{library}"
        samples = matmul_ceiling(ctx, plan.matmul_n, plan.matmul_calls, dtype, args.warmup + args.repeats, library)
        if before is None:
            result[name] = dict(n=plan.matmul_n, calls_per_repetition=plan.matmul_calls, dtype=dtype_name,
                                library=library, gflops=summary(samples[args.warmup:]))
        else:
            result[name] = dict(before[name], gflops_end=summary(samples[args.warmup:]))
    return result


def machine_info(ctx: Context) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu=cpu,
        logical_cores=os.cpu_count(),
        usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        python=platform.python_version(),
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        device=str(ctx.device),
        device_name=torch.cuda.get_device_name(ctx.device) if ctx.cuda else cpu,
        precision="bf16 autocast" if ctx.bf16 else "float32",
        channels_last=ctx.channels_last,
        compile=ctx.compile,
    )
    if ctx.cuda:
        info["cuda"] = torch.version.cuda
    return info


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def num(x: float) -> str:
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def spread(s: dict) -> str:
    return f"{num(s['median'])} ({num(s['min'])}–{num(s['max'])})"


def ratio(s: dict) -> str:
    return f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"


LIBRARY_NAMES = {"blas": "torch.mm (BLAS)", "onednn": "oneDNN (1×1 conv)"}


def compile_note(compile_: str) -> str:
    return {"none": "", "ours": ", ours compiled (theirs eager)", "both": ", both compiled"}[compile_]


def markdown(results: dict) -> str:
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
    if results.get("training"):
        lines += training_table(results)
    if results.get("sampling"):
        lines += sampling_table(results)
    if results.get("scheduler_step"):
        lines += scheduler_table(results)
    if results.get("memory"):
        lines += memory_table(results)
    return "\n".join(lines)


def training_table(results: dict) -> list:
    lines = []
    ceiling_dtype = results["training"][0]["ceiling_dtype"]
    lines += ["", ("**Training step** (forward + L_simple + backward + AdamW), images/s; ours/theirs > 1: ours "
                   f"faster; achieved GFLOP/s (counted FLOPs / time) and % of the {ceiling_dtype} ceiling"), "",
              "| model | input | batch | ours img/s | theirs img/s | ours/theirs | ours GFLOP/s | theirs GFLOP/s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["training"]:
        shape = "×".join(map(str, r["image_shape"]))
        cells = [f"{r['label']} ({r['parameters'] / 1e6:.1f} M)", shape, str(r["batch"]),
                 spread(r["ours"]["images_per_s"]), spread(r["theirs"]["images_per_s"]), ratio(r["ratio"])]
        cells += [f"{num(r[s]['gflops']['median'])} ({100 * r[s]['fraction_of_ceiling']:.1f}%)" for s in SIDES]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def sampling_table(results: dict) -> list:
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
            spread(r["theirs"]["images_per_s"]), ratio(r["ratio"]),
            *[f"{num(r[s]['gflops']['median'])} ({100 * r[s]['fraction_of_ceiling']:.1f}%)" for s in SIDES],
            f"{r['max_abs_diff']:.2g}", match]) + " |")
    return lines


def scheduler_table(results: dict) -> list:
    s = results["scheduler_step"]
    return ["", ("**Scheduler step** (DDPMFromScratchScheduler vs DDPMScheduler, "
              f"{'×'.join(map(str, s['shape']))} float32, {s['inference_steps']}-step chain), µs per call"), "",
              "| ours µs | theirs µs | speed-up (theirs time / ours) | max abs diff |", "|---:|---:|---:|---:|",
              (f"| {spread(s['ours']['us_per_call'])} | {spread(s['theirs']['us_per_call'])} | "
              f"{ratio(s['speedup'])} | {s['max_abs_diff']:.2g} |")]


def memory_table(results: dict) -> list:
    mem = results["memory"]
    lines = ["", f"**Peak memory** (eager float32 models), MiB, {mem['what']}; ours/theirs < 1: ours smaller.", "",
              f"Method: {mem['method']}.", "",
              "| workload | ours MiB | theirs MiB | ours/theirs |", "|---|---:|---:|---:|"]
    for e in mem["entries"]:
        cells = [e[s].get("delta_mib") if "error" not in e[s] else None for s in SIDES]
        ratio_cell = "—" if e["ratio"] is None else f"{e['ratio']:.2f}"
        lines.append(f"| {e['workload']} | {num(cells[0])} | {num(cells[1])} | {ratio_cell} |")
    return lines


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


SECTIONS = ("memory", "training", "sampling", "scheduler")


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

    def say(what: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)

    # Memory first: on CPU its children are forked before this process computes anything.
    if "memory" in args.sections:
        say("peak memory")
        results["memory"] = measure_memory(plan, dataclasses.replace(ctx, compile="none", mixed_precision="no"))
    say("machine ceiling")
    results["ceiling"] = run_ceiling(plan, ctx, args)
    if "training" in args.sections:
        results["training"] = []
        for spec in plan.train:
            say(f"training {spec.label}, batch {spec.batch}")
            results["training"].append(run_training(spec, ctx, args, results["ceiling"]))
    if "sampling" in args.sections:
        results["sampling"] = []
        for spec in plan.sample:
            say(f"sampling {spec.label}, batch {spec.batch}, {spec.steps} steps")
            results["sampling"].append(run_sampling(spec, ctx, args, results["ceiling"]))
    if "scheduler" in args.sections:
        say("scheduler step")
        results["scheduler_step"] = run_scheduler_step(plan, ctx, args)
    say("machine ceiling, again")
    results["ceiling"] = run_ceiling(plan, ctx, args, before=results["ceiling"])
    refresh_fractions(results)

    results["table"] = markdown(results)
    print(results["table"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
