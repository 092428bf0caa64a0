#!/usr/bin/env python
"""Train the digit classifier behind the classifier FID / KID metrics and write its weights.

`python scripts/train_digit_classifier.py [--seed 0] [--epochs 15] [--output PATH]`

Trains on the digits' "train" split only (deterministic for a given seed),
reports the accuracy on the 300 held-out "test" digits, and writes a
safetensors file whose metadata records the architecture, the training
settings and that accuracy. The default output is the file shipped inside the
package (src/ddpm_from_scratch/digit_classifier.safetensors).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm_from_scratch.evaluation.digit_classifier import (
    SHIPPED_WEIGHTS,
    heldout_accuracy,
    load_digit_classifier,
    save_digit_classifier,
    train_digit_classifier,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--output", type=Path, default=SHIPPED_WEIGHTS, help=f"default: {SHIPPED_WEIGHTS}")
    p.add_argument("--reference_rows", action="store_true",
                   help="Afterwards, print the floor/ceiling reference rows of the metrics.")
    p.add_argument("--quiet", action="store_true", help="No per-epoch loss.")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be a positive integer, got {args.epochs}")
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    model = train_digit_classifier(seed=args.seed, epochs=args.epochs, verbose=not args.quiet)
    accuracy, correct, total = heldout_accuracy(model)
    num_params = sum(p.numel() for p in model.parameters())
    path = save_digit_classifier(
        model,
        args.output,
        extra_metadata={"heldout_accuracy": accuracy, "heldout_correct": correct, "heldout_total": total},
    )
    print(f"parameters: {num_params:,}")
    print(f"training time: {model.training_info['train_seconds']:.1f} s ({model.training_info['steps']} steps)")
    print(f"held-out accuracy: {accuracy:.4f} ({correct}/{total})")
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    if args.reference_rows:
        from ddpm_from_scratch.evaluation.metrics import format_reference_rows, reference_rows

        print(format_reference_rows(reference_rows(load_digit_classifier(path))))
    return accuracy


if __name__ == "__main__":
    main()
