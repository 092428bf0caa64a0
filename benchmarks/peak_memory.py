"""Peak memory of every timed workload, for each side, on the eager float32 models.

CPU: every (workload, side) runs in its own process forked from the benchmark before it has computed
anything (so each child starts from the same small, clean heap; ``run.py`` measures this section
first, since a child forked after the first OpenMP computation can deadlock). The child builds both
models with the workloads' own builders (as the timed runs do), keeps its side's, resets the kernel's
peak-RSS counter (``echo 5 > /proc/self/clear_refs``), reads the baseline, runs two training steps / a
two-step sampling run / 20 scheduler steps and reads ``VmHWM`` (``harness.MemoryProbe``). Reported: the
peak growth over the baseline (activations, gradients, optimiser state, temporaries; not the weights),
and the baseline itself. CUDA: the same, in process, with ``torch.cuda.reset_peak_memory_stats`` and
``memory_allocated`` / ``max_memory_allocated``.
"""

from __future__ import annotations

import gc

from harness import SIDES, Context, MemoryProbe, Plan, Spec, build_pair, in_forked_child, num
from sampling import build_pipelines, sample
from scheduler_step import build_schedulers, scheduler_calls_fn, step_inputs
from training_step import train_step_fn, training_batch


def memory_of(kind: str, spec: Spec | tuple, side: str, ctx: Context) -> dict:
    """Build both sides as the timed runs do, keep `side`'s, and measure its workload's peak.

    `kind` is "train" or "sample" (`spec` a Spec) or "step" (`spec` the scheduler step's sample shape).
    """
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


def measure_memory(plan: Plan, ctx: Context) -> dict:
    """The "memory" section: one entry per workload of `plan`, each side measured alone."""
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


def table(results: dict) -> list:
    """The markdown lines of the peak-memory table."""
    mem = results["memory"]
    lines = ["", f"**Peak memory** (eager float32 models), MiB, {mem['what']}; ours/theirs < 1: ours smaller.", "",
             f"Method: {mem['method']}.", "",
             "| workload | ours MiB | theirs MiB | ours/theirs |", "|---|---:|---:|---:|"]
    for e in mem["entries"]:
        cells = [e[s].get("delta_mib") if "error" not in e[s] else None for s in SIDES]
        ratio_cell = "—" if e["ratio"] is None else f"{e['ratio']:.2f}"
        lines.append(f"| {e['workload']} | {num(cells[0])} | {num(cells[1])} | {ratio_cell} |")
    return lines
