#!/usr/bin/env python
"""The schedule's high-SNR end and Fourier features (issue 18, item 4): bound and samples, side by side.

    python benchmarks/schedule_end_digits.py --phase train      # one `scripts/train.py` run per variant, in turn
    python benchmarks/schedule_end_digits.py --phase evaluate   # bound + sample quality of each
    python benchmarks/schedule_end_digits.py                    # both

Each run is `scripts/train.py`'s defaults (L_hybrid, batch 128, seed 0, the `digits` width, EMA; 2,000 steps unless
the variant says otherwise) with only the schedule's end, the network's input and the seed changed (`make train` is
``prefix50-fourier4-6-4000steps``):

- ``linear``: the default (β 1e-4 → 0.02, log SNR 9.2 at t = 0);
- ``linear-fourier``: the same with VDM's Fourier features of x_t, exponents 4–8;
- ``prefix50-fourier…``: 50 steps falling in log SNR from 13 to 9.2 put before the whole linear schedule
  (`--log_snr_prefix_steps 50`, T = 1050), with Fourier exponents 4–8, 4–6 or 4–5;
- ``head100-fourier4-8``: the linear schedule's first 100 steps replaced by a fall in log SNR from 13.

Each is evaluated the same way: bits/dim of the variational bound on all 300 held-out digits (1000- or 1050-step
chain, one Monte-Carlo draw per term, seed 0) with its decoder term; classifier FID / KID of ``--num_samples``
DPM-Solver++ samples (25 steps, image i drawn with seed i) against the held-out digits, as the saved pipeline
samples by default (for a prefixed schedule: on the chain past the prefix, exactly the default model's grid in log
SNR; see `pipelines.chain_prefix`) and, for a prefixed schedule, also with the sampler's own spacing of the whole
chain of 1050 timesteps.

Results go to ``--json`` after every row (a long run keeps what it has) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import launch_training, resumable_results, train_then_evaluate

PREFIX = ["--log_snr_max", "13", "--log_snr_prefix_steps", "50"]
# name: (train.py flags, training steps)
VARIANTS = {
    "linear": ([], 2000),
    "linear-seed1": (["--seed", "1"], 2000),
    "linear-4000steps": ([], 4000),  # the paper's DDPM at `make train`'s budget: what the extra steps alone give
    "linear-fourier4-8": (["--fourier_features", "4", "5", "6", "7", "8"], 2000),
    "prefix50-fourier4-8": (PREFIX + ["--fourier_features", "4", "5", "6", "7", "8"], 2000),
    "prefix50-fourier4-6": (PREFIX + ["--fourier_features", "4", "5", "6"], 2000),
    "prefix50-fourier4-5": (PREFIX + ["--fourier_features", "4", "5"], 2000),
    "prefix50-fourier4-5-seed1": (PREFIX + ["--fourier_features", "4", "5", "--seed", "1"], 2000),
    "prefix50-fourier4-6-4000steps": (PREFIX + ["--fourier_features", "4", "5", "6"], 4000),
    # `make train`'s run (its TRAIN_FLAGS), at three training seeds:
    "prefix50-fourier4-6-4000steps-seed1": (PREFIX + ["--fourier_features", "4", "5", "6", "--seed", "1"], 4000),
    "prefix50-fourier4-6-4000steps-seed2": (PREFIX + ["--fourier_features", "4", "5", "6", "--seed", "2"], 4000),
    "head100-fourier4-8": (["--log_snr_max", "13", "--log_snr_head_steps", "100",
                            "--fourier_features", "4", "5", "6", "7", "8"], 2000),
}
SAMPLER, STEPS = "dpm-solver", 25


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["train", "evaluate", "all"], default="all")
    p.add_argument("--runs_dir", default="schedule-end-runs", help="Where the pipelines are trained, one folder each.")
    p.add_argument("--json", default="benchmarks/schedule_end_digits.json")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated subset of {','.join(VARIANTS)}.")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=500, help="Sampling batch.")
    return p.parse_args(argv)


def train(variant: str, args: argparse.Namespace) -> dict:
    flags, steps = VARIANTS[variant]
    return launch_training(Path(args.runs_dir) / variant, steps, *flags)


def evaluate(variant: str, args: argparse.Namespace, record: dict, save) -> None:
    from ddpm_from_scratch import DDPMFromScratchPipeline
    from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
    from ddpm_from_scratch.evaluation.evaluate import bound_summary
    from ddpm_from_scratch.evaluation.metrics import digit_sample_quality
    from ddpm_from_scratch.sampling.samplers import generate, scheduler_for

    pipe = DDPMFromScratchPipeline.from_pretrained(Path(args.runs_dir) / variant)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    if "bound" not in record:
        started = time.time()
        images, _ = load_digits_tensors("test")
        record["bound"] = bound_summary(pipe, images, seed=0, progress=False)
        record["bound"]["seconds"] = time.time() - started
        save()
        print(f"{variant}: {record['bound']['bits_per_dim']:.3f} bits/dim", flush=True)
    quality = record.setdefault("sample_quality", {})
    grids = {"default": None}  # as the saved pipeline samples: past its prefix, if it has one
    if pipe.log_snr_prefix_steps:
        whole = scheduler_for(SAMPLER, pipe.scheduler.config)
        whole.set_timesteps(STEPS)
        grids["whole chain"] = [int(t) for t in whole.timesteps]
    for key, timesteps in grids.items():
        if key in quality:
            continue
        started = time.time()
        samples = generate(pipe, args.num_samples, SAMPLER, STEPS, seed=0, batch_size=args.batch_size,
                           timesteps=timesteps)
        seconds = time.time() - started
        row = digit_sample_quality(samples.float(), value_range=(0.0, 1.0), seed=0)
        quality[key] = {"seconds": seconds, "timesteps": timesteps,
                        **{k: row[k] for k in ("classifier_fid", "kid_mean", "kid_std", "class_histogram",
                                               "num_images")}}
        save()
        print(f"{variant} {key}: classifier FID {row['classifier_fid']:.3f} in {seconds:.0f} s", flush=True)


def table(results: dict) -> str:
    lines = ["| variant | train steps | bits/dim (300 held-out) | decoder L_0 | classifier FID, DPM-Solver++ 25, "
             "as the pipeline samples | … own spacing of the whole chain | train time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for variant, (_, steps) in VARIANTS.items():
        run = results["runs"].get(variant)
        if run is None:
            continue
        bound = run.get("bound", {})
        quality = run.get("sample_quality", {})

        def fid(key):
            return f"{quality[key]['classifier_fid']:.3f}" if key in quality else ""

        bits = f"{bound['bits_per_dim']:.3f} ± {bound['bits_per_dim_std_error']:.3f}" if bound else ""
        decoder = f"{bound['decoder_bits_per_dim']:.3f}" if bound else ""
        minutes = f"{run['train_seconds'] / 60:.1f} min" if "train_seconds" in run else ""
        lines.append(f"| {variant} | {steps} | {bits} | {decoder} | {fid('default')} | {fid('whole chain')} | "
                     f"{minutes} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results, save = resumable_results(args.json, {"runs": {}})
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"error: --variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}.")
    train_then_evaluate(args, results, save, variants, train, evaluate)
    print(table(results))


if __name__ == "__main__":
    main()
