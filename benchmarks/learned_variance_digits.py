#!/usr/bin/env python
"""L_simple vs L_hybrid vs L_vlb + loss-aware sampling on the digits, at the default training budget.

    python benchmarks/learned_variance_digits.py --phase train      # three `scripts/train.py` runs, in turn
    python benchmarks/learned_variance_digits.py --phase evaluate   # bound + sample quality of each
    python benchmarks/learned_variance_digits.py                    # both

Each run is `make train`'s command (2,000 steps, batch 128, seed 0, the `digits` width, EMA) with only
the loss changed: `--loss simple` (fixed σ² = β̃_t), `--loss hybrid` (learned σ², λ = 0.001), and
`--loss vlb --timestep_sampler loss-aware`. Each is then evaluated the same way:

- bits/dim of the variational bound on all 300 held-out digits (one Monte-Carlo draw per term, seed 0);
- classifier FID / KID / class histogram of ``--num_samples`` samples (image i drawn with seed i) from
  respaced DDPM at 1000, 250, 100, 50 and 25 steps, and DDIM and DPM-Solver++ at 25 and 50 steps,
  against the held-out digits, with the sampling wall time (U-Net compiled with
  `compile_for_sampling` unless ``--no_compile``: same function to 1e-5, ~1.3× faster here).

Results go to ``--json`` after every row (a long run keeps what it has) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import launch_training, resumable_results, train_then_evaluate

VARIANTS = {
    "simple": ["--loss", "simple"],
    "hybrid": ["--loss", "hybrid"],
    "vlb": ["--loss", "vlb", "--timestep_sampler", "loss-aware"],
}
SAMPLERS = [("ddpm", 1000), ("ddpm", 250), ("ddpm", 100), ("ddpm", 50), ("ddpm", 25),
            ("ddim", 50), ("ddim", 25), ("dpm-solver", 50), ("dpm-solver", 25)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["train", "evaluate", "all"], default="all")
    p.add_argument("--runs_dir", default="learned-variance-runs", help="Where the three pipelines are trained.")
    p.add_argument("--json", default="benchmarks/learned_variance_digits.json")
    p.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated subset of simple,hybrid,vlb.")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=500, help="Sampling batch.")
    p.add_argument("--samplers", default=",".join(f"{name}:{steps}" for name, steps in SAMPLERS))
    p.add_argument("--no_compile", dest="compile", action="store_false")
    return p.parse_args(argv)


def train(variant: str, args: argparse.Namespace) -> dict:
    return launch_training(Path(args.runs_dir) / variant, args.steps, "--sampler", "ddpm", "--num_inference_steps", "100", *VARIANTS[variant])


def evaluate(variant: str, args: argparse.Namespace, record: dict, save) -> None:
    from ddpm_from_scratch import DDPMFromScratchPipeline
    from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
    from ddpm_from_scratch.evaluation.evaluate import bound_summary
    from ddpm_from_scratch.sampling.fast import compile_for_sampling
    from ddpm_from_scratch.evaluation.metrics import digit_sample_quality
    from ddpm_from_scratch.sampling.samplers import generate

    pipe = DDPMFromScratchPipeline.from_pretrained(Path(args.runs_dir) / variant)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    record["variance_type"] = pipe.scheduler.config.variance_type
    if "bound" not in record:
        started = time.time()
        images, _ = load_digits_tensors("test")
        record["bound"] = bound_summary(pipe, images, seed=0, progress=False)
        record["bound"]["seconds"] = time.time() - started
        save()
        print(f"{variant}: {record['bound']['bits_per_dim']:.3f} bits/dim", flush=True)
    if args.compile:
        compile_for_sampling(pipe.unet)
    quality = record.setdefault("sample_quality", {})
    for item in args.samplers.split(","):
        name, steps = item.split(":")
        key = f"{name}:{steps}"
        if key in quality:
            continue
        started = time.time()
        samples = generate(pipe, args.num_samples, name, int(steps), seed=0, batch_size=args.batch_size)
        seconds = time.time() - started
        row = digit_sample_quality(samples.float(), value_range=(0.0, 1.0), seed=0)
        quality[key] = {"seconds": seconds, **{k: row[k] for k in ("classifier_fid", "kid_mean", "kid_std",
                                                                  "class_histogram", "num_images")}}
        save()
        print(f"{variant} {key}: classifier FID {row['classifier_fid']:.3f} in {seconds:.0f} s", flush=True)


def table(results: dict) -> str:
    variants = [v for v in VARIANTS if v in results["runs"]]
    lines = ["| | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]

    def cell(variant, fn):
        try:
            return fn(results["runs"][variant])
        except (KeyError, TypeError):
            return ""

    lines.append("| bits/dim (300 held-out) | " + " | ".join(
        cell(v, lambda r: f"{r['bound']['bits_per_dim']:.3f} ± {r['bound']['bits_per_dim_std_error']:.3f}")
        for v in variants) + " |")
    lines.append("| decoder term L_0 | " + " | ".join(
        cell(v, lambda r: f"{r['bound']['decoder_bits_per_dim']:.3f}") for v in variants) + " |")
    keys = []
    for v in variants:
        keys += [k for k in results["runs"][v].get("sample_quality", {}) if k not in keys]
    for key in keys:
        lines.append(f"| classifier FID, {key.replace(':', ' ')} steps | " + " | ".join(
            cell(v, lambda r: f"{r['sample_quality'][key]['classifier_fid']:.3f}") for v in variants) + " |")
    lines.append("| train time | " + " | ".join(
        cell(v, lambda r: f"{r['train_seconds'] / 60:.1f} min") for v in variants) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results, save = resumable_results(args.json, {"runs": {}})

    variants = args.variants.split(",")
    train_then_evaluate(args, results, save, variants, train, evaluate)
    print(table(results))


if __name__ == "__main__":
    main()
