#!/usr/bin/env python
"""Class-conditional digits with classifier-free guidance against the default unconditional run (issue 20).

    python benchmarks/class_conditional_digits.py --phase train      # the two `scripts/train.py` runs, in turn
    python benchmarks/class_conditional_digits.py --phase evaluate   # guidance sweep + unconditional quality
    python benchmarks/class_conditional_digits.py                    # both

Both runs are `make train`'s command (2,000 steps, batch 128, seed 0, the `digits` width, L_hybrid, EMA); the
conditional one adds ``--class_conditional`` (labels of the digits, the null label dropped in with p = 0.1). Each is
then evaluated the same way, with DPM-Solver++ at 25 steps (the training script's default sampler), ``--num_samples``
samples (image i drawn with seed i), against the 300 held-out digits:

- conditional, per guidance scale s ∈ {1, 1.5, 2, 3, 5}: the package's digit classifier's accuracy on the digit
  asked for (each digit asked for equally often), classifier FID, KID and the predicted-class histogram
  (`evaluation.conditional.guided_sample_quality`), and the bound of the held-out digits given their labels;
- both, unconditional (the conditional model with the null label): classifier FID, KID and the bound (on the first
  ``--num_bound_images`` held-out digits), so the table shows what conditioning costs the model that ignores labels.

Results go to ``--json`` after every row (a long run keeps what it has) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import launch_training, resumable_results, train_then_evaluate

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"unconditional": [], "conditional": ["--class_conditional", "--class_dropout_prob", "0.1"]}
SAMPLER, STEPS = "dpm-solver", 25


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["train", "evaluate", "all"], default="all")
    p.add_argument("--runs_dir", default="class-conditional-runs", help="Where the two pipelines are trained.")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "class_conditional_digits.json"))
    p.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated subset of unconditional,conditional.")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--num_bound_images", type=int, default=300, help="Held-out digits for the bounds.")
    p.add_argument("--batch_size", type=int, default=500, help="Sampling batch.")
    return p.parse_args(argv)


def train(variant: str, args: argparse.Namespace) -> dict:
    return launch_training(Path(args.runs_dir) / variant, args.steps, *VARIANTS[variant])


def evaluate(variant: str, args: argparse.Namespace, record: dict, save) -> None:
    from ddpm_from_scratch import DDPMFromScratchPipeline
    from ddpm_from_scratch.evaluation.conditional import GUIDANCE_SCALES, bound_given_labels, guided_sample_quality
    from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
    from ddpm_from_scratch.evaluation.evaluate import bound_summary
    from ddpm_from_scratch.evaluation.metrics import digit_sample_quality
    from ddpm_from_scratch.sampling.samplers import generate

    pipe = DDPMFromScratchPipeline.from_pretrained(Path(args.runs_dir) / variant)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    images, labels = load_digits_tensors("test")
    images, labels = images[:args.num_bound_images], labels[:args.num_bound_images]
    if "unconditional" not in record:
        started = time.time()
        samples = generate(pipe, args.num_samples, SAMPLER, STEPS, seed=0, batch_size=args.batch_size).float()
        row = digit_sample_quality(samples, value_range=(0.0, 1.0), seed=0)
        record["unconditional"] = {"seconds": time.time() - started, **{
            k: row[k] for k in ("classifier_fid", "kid_mean", "kid_std", "class_histogram", "num_images")}}
        save()
        print(f"{variant}: unconditional classifier FID {row['classifier_fid']:.3f}", flush=True)
    if pipe.num_classes is not None:
        rows = record.setdefault("guidance", [])
        for scale in GUIDANCE_SCALES[len(rows):]:  # one row at a time: a long run keeps what it has
            started = time.time()
            row, = guided_sample_quality(pipe, args.num_samples, SAMPLER, STEPS, seed=0, batch_size=args.batch_size,
                                         guidance_scales=(scale,))
            rows.append({**row, "seconds": time.time() - started})
            save()
            print(f"{variant}: s = {scale:g}, accuracy {row['accuracy']:.3f}, classifier FID "
                  f"{row['classifier_fid']:.3f}", flush=True)
    if "bound" not in record:
        record["bound"] = bound_summary(pipe, images, seed=0, progress=False)
        save()
        print(f"{variant}: {record['bound']['bits_per_dim']:.3f} bits/dim", flush=True)
    if pipe.num_classes is not None and "bound_given_label" not in record:
        record["bound_given_label"] = bound_given_labels(pipe, images, labels, seed=0, progress=False)
        save()


def table(results: dict) -> str:
    runs = results["runs"]
    lines = [f"Sampler: {SAMPLER} {STEPS} steps; classifier FID against the 300 held-out digits "
             "(the package's digit classifier's features; lower is better).", "",
             "| model | guidance scale | accuracy on the digit asked for | classifier FID | KID | bits/dim |",
             "|---|---:|---:|---:|---|---:|"]
    for variant in VARIANTS:
        record = runs.get(variant, {})
        if "unconditional" in record:
            u, bound = record["unconditional"], record.get("bound", {})
            lines.append(f"| {variant}, no label | — | — | {u['classifier_fid']:.3f} | {u['kid_mean']:.4f} ± "
                         f"{u['kid_std']:.4f} | {bound.get('bits_per_dim', float('nan')):.3f} |")
        given = record.get("bound_given_label", {})
        for row in record.get("guidance", []):
            bpd = f"{given['bits_per_dim']:.3f} (given the label)" if row["guidance_scale"] == 1.0 and given else ""
            lines.append(f"| {variant} | {row['guidance_scale']:g} | {row['accuracy']:.3f} ± "
                         f"{row['accuracy_std_error']:.3f} | {row['classifier_fid']:.3f} | {row['kid_mean']:.4f} ± "
                         f"{row['kid_std']:.4f} | {bpd} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results, save = resumable_results(Path(args.json), {"runs": {}})
    variants = args.variants.split(",")
    train_then_evaluate(args, results, save, variants, train, evaluate)
    print(table(results))


if __name__ == "__main__":
    main()
