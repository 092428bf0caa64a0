#!/usr/bin/env python
"""Sohl-Dickstein et al. (2015), Table 1, on CPU in minutes: `python scripts/toy.py {heartbeat,swiss-roll}`.

heartbeat    binary sequences of length 20 with a 1 every 5th position; binomial diffusion, T = 2000.
             Reports K (bits per sequence) with the paper's −2.414 and the optimum log2(1/5) = −2.322.
swiss-roll   2-D Swiss roll at unit variance; Gaussian diffusion, T = 40, learned mean and covariance.
             Reports K (bits per point) with the paper's 2.35 and a 50-component Gaussian mixture's
             held-out log-likelihood.

Writes the trained pipeline to --output_dir (default toy-heartbeat/ or toy-swiss-roll/; load it with
BinomialDiffusionPipeline / PointDiffusionPipeline.from_pretrained), a figure, and results.json.
The data are generated from --seed: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys

from ddpm_from_scratch.toy.tasks import TASKS, run_task


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--output_dir", help="Default: toy-<task>/.")
    p.add_argument("--seed", type=int, default=0, help="Seeds the data, the initial weights and every draw.")
    p.add_argument("--max_train_steps", type=int, help="Default: the task's (heartbeat 12000, swiss-roll 8000).")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = p.parse_args(argv)
    if args.max_train_steps is not None and args.max_train_steps < 1:
        p.error(f"--max_train_steps must be a positive integer, got {args.max_train_steps}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = run_task(args.task, args.output_dir, seed=args.seed, max_train_steps=args.max_train_steps,
                       progress=not args.quiet)
    shown = {k: v for k, v in results.items() if k.endswith("bits") or k in ("task", "valid_sample_fraction")}
    print(json.dumps(shown, indent=2))
    print(f"Pipeline, figure and results.json in {args.output_dir or 'toy-' + args.task}/", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
