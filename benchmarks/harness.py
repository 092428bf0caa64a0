"""The machinery every benchmark here shares: what runs, how it is timed, what the machine can do.

The workloads (``training_step.py``, ``sampling.py``, ``scheduler_step.py``, ``peak_memory.py``) build
on it and ``run.py`` runs them; the training scripts (``*_digits.py``, ``diffusers_checkpoint_bound.py``)
take the machine record and the results file from it.

Method. Every timed workload runs interleaved (``interleaved``): each repetition times ours and theirs
back to back, the order alternating between repetitions (ours-theirs, theirs-ours, ...), so slow drift of
the machine (thermal, other tenants) hits both sides alike. ``--warmup`` repetitions run first and are
discarded. Reported (``summary``): the median over ``--repeats`` repetitions with min–max (the JSON also
has the quartiles and every sample); ratios (``paired_ratio``) are medians of the per-repetition ratios,
so each compares two measurements taken seconds apart. On CUDA the models run under bf16 autocast and
every timing is bracketed by ``torch.cuda.synchronize()``.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (``flop_counter_mode``: matrix
products, convolutions and attention, forward and backward; element-wise work such as GroupNorm, SiLU
or the optimiser is not counted), so "achieved GFLOP/s" is counted FLOPs / measured time.

The machine's ceiling (``run_ceiling``) is the GFLOP/s of a large matrix product, through BLAS and, on a
CPU, through oneDNN, measured at the start of a run and again at the end; the fractions use the faster
of the libraries and of the two measurements (``ceiling_gflops``), since a busy moment of a shared
machine lowers a ceiling, never raises it, and a large gap between start and end shows the machine was
not quiet.

Scripts here import their siblings plainly (``from harness import ...``): Python puts a script's own
folder first on ``sys.path``, so this works from any working directory.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from torch.utils import flop_counter

from ddpm_from_scratch import DDPMFromScratchUNet

SIDES = ("ours", "theirs")
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
    """Every workload of one run: the model workloads, the scheduler-step and the ceiling sizes."""

    train: list
    sample: list
    step_shape: tuple = (16, 3, 32, 32)
    step_calls: int = 500  # scheduler.step calls per repetition
    matmul_n: int = 2048
    matmul_calls: int = 5


@dataclass
class Context:
    """Where and how both sides run: device, seed, memory layout, compilation and precision."""

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

    @property
    def ceiling_dtype(self) -> str:
        """The ceiling a run's achieved GFLOP/s is a fraction of: the precision its products run in."""
        return "bfloat16" if self.bf16 else "float32"

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


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], ctx: Context) -> float:
    """Wall-clock seconds of one call of `fn`, the device synchronised before and after."""
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
    """Median, min, max, quartiles, count and every sample (sorted) of a list of numbers."""
    xs = sorted(float(x) for x in samples)
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return dict(median=statistics.median(xs), min=xs[0], max=xs[-1], q1=q1, q3=q3, n=len(xs), samples=xs)


def paired_ratio(ours, theirs) -> dict:
    """The summary of the per-repetition ratios ours[i] / theirs[i]."""
    return summary([a / b for a, b in zip(ours, theirs)])


def throughput(seconds: dict, work: float, flops: dict, steps: int, peak: float) -> dict:
    """Each side's images/s (`work` images per repetition), achieved GFLOP/s (`flops[side]` per step,
    `steps` steps per repetition) and its median as a fraction of the `peak` GFLOP/s."""
    result = {}
    for side in SIDES:
        gflops = [flops[side] * steps / s / 1e9 for s in seconds[side]]
        result[side] = dict(images_per_s=summary([work / s for s in seconds[side]]), gflops=summary(gflops),
                            fraction_of_ceiling=statistics.median(gflops) / peak)
    return result


def speed_ratio(seconds: dict) -> dict:
    """Ours' throughput / theirs', per repetition (> 1: ours faster)."""
    return paired_ratio([1 / s for s in seconds["ours"]], [1 / s for s in seconds["theirs"]])


# --------------------------------------------------------------------------------------
# The machine's ceiling and counted FLOPs
# --------------------------------------------------------------------------------------


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


def run_ceiling(plan: Plan, ctx: Context, args: argparse.Namespace, before: dict | None = None) -> dict:
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


def flop_counter_mode() -> flop_counter.FlopCounterMode:
    """A silent FlopCounterMode that also counts the CPU attention kernel; read `get_total_flops()` after."""
    return flop_counter.FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping())


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


def in_forked_child(fn: Callable[[], dict], timeout_s: int = 900) -> dict:
    """Run `fn` in a forked child process and return its (JSON-able) result.

    Fork only before this process's first parallel (OpenMP) computation: a child forked after it can
    deadlock on the thread pool's locks.
    """
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


# --------------------------------------------------------------------------------------
# The machine record
# --------------------------------------------------------------------------------------


def host_info() -> dict:
    """The host and the software, whatever device the work runs on: date (UTC), CPU model, cores,
    torch threads, load average and the Python, torch and diffusers versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu=cpu,
        logical_cores=os.cpu_count(),
        usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        python=platform.python_version(),
        torch=torch.__version__,
        diffusers=diffusers.__version__,
    )


def machine_info(ctx: Context) -> dict:
    """`host_info` plus the device and the settings both sides ran under (run.py's record)."""
    info = host_info()
    info.update(
        device=str(ctx.device),
        device_name=torch.cuda.get_device_name(ctx.device) if ctx.cuda else info["cpu"],
        precision="bf16 autocast" if ctx.bf16 else "float32",
        channels_last=ctx.channels_last,
        compile=ctx.compile,
    )
    if ctx.cuda:
        info["cuda"] = torch.version.cuda
    return info


def script_machine_info() -> dict:
    """`host_info` for the scripts that train and evaluate models, led by the fields their records have
    always had (`platform`, `processor`, `cpus`), so that old and new records read alike."""
    info = host_info()
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": info["usable_cores"],
            **info}


# --------------------------------------------------------------------------------------
# Results files and progress
# --------------------------------------------------------------------------------------


def load_results(path: Path | str, start: dict) -> dict:
    """The results already in `path` (a resumed run skips what is there), else `start`."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else start


def save_results(path: Path | str, results: dict) -> None:
    """Write `results` to `path` as indented JSON, creating its folder. The text goes to a temporary file
    beside it first and replaces `path` in one step, so an interrupted save never leaves half a file
    (the long scripts save after every row and resume from what is there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named by hand rather than by tempfile, whose files are private (0600): this one gets the umask's mode.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, path)


def resumable_results(path: Path | str, start: dict) -> tuple[dict, Callable[[], None]]:
    """For a long run that saves after every row and skips rows already there: the results in `path`
    (else `start`), stamped with this run's `script_machine_info`, and the function that saves them."""
    results = load_results(path, start)
    results["machine"] = script_machine_info()
    return results, functools.partial(save_results, path, results)


def launch_training(output_dir: Path | str, max_train_steps: int, *flags: str) -> dict:
    """`scripts/train.py` as `make train` launches it (one process, float32; here without evaluation or logger) into
    `output_dir` with `flags` in place of the Makefile's TRAIN_FLAGS, run to the end; returns its wall time and
    command, as the digits benchmarks record them."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(root / "scripts" / "train.py"),
               "--output_dir", str(output_dir), "--max_train_steps", str(max_train_steps), "--no_evaluate",
               "--logger", "none", *flags]
    started = time.time()
    subprocess.run(command, check=True, cwd=root)
    return {"train_seconds": time.time() - started, "command": " ".join(command[2:])}


def train_then_evaluate(args, results: dict, save: Callable[[], None], variants: list[str],
                        train: Callable, evaluate: Callable) -> None:
    """The trained comparisons' two phases (``args.phase``: train, evaluate or all): `train(variant, args)` replaces
    a variant's record (a retrained model starts afresh), `evaluate(variant, args, record, save)` fills it."""
    if args.phase in ("train", "all"):
        for variant in variants:
            results["runs"][variant] = train(variant, args)
            save()
    if args.phase in ("evaluate", "all"):
        for variant in variants:
            evaluate(variant, args, results["runs"].setdefault(variant, {}), save)


def say(what: str) -> None:
    """A time-stamped progress line on stderr (stdout carries the table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Number formatting for the tables
# --------------------------------------------------------------------------------------


def num(x: float | None) -> str:
    """A number to about three significant digits, thousands separated; '—' for none."""
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
    """A summary as 'median (min–max)'."""
    return f"{num(s['median'])} ({num(s['min'])}–{num(s['max'])})"


def ratio(s: dict) -> str:
    """A ratio's summary as 'median× (min–max)'."""
    return f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"


def gflops_cell(run: dict, side: str) -> str:
    """A side's achieved GFLOP/s and its percentage of the ceiling, for the training and sampling tables."""
    return f"{num(run[side]['gflops']['median'])} ({100 * run[side]['fraction_of_ceiling']:.1f}%)"
