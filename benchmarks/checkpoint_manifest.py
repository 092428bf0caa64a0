#!/usr/bin/env python
"""What verifying a checkpoint costs (issue 21): SHA-256 of every file against writing the checkpoint, same run.

    python benchmarks/checkpoint_manifest.py [--preset ddpm-cifar10] [--repeats 3]

Builds the preset's U-Net, takes one AdamW step (so the optimiser holds its two moments) and writes a checkpoint
the way `scripts/train.py` does (`accelerate`'s `save_state` plus diffusers' `EMAModel.save_pretrained`, through
`training.checkpoints.save_checkpoint`, which now ends with the manifest). Then times, on the written folder,
`write_manifest` (hashing every file, what a save adds) and `checkpoint_problem` (what a resume adds), against the
save itself. Reported: seconds, MB/s and the ratio to the save, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from harness import save_results, script_machine_info

from ddpm_from_scratch import DDPMFromScratchUNet
from ddpm_from_scratch.training.checkpoints import checkpoint_problem, save_checkpoint, write_manifest


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ddpm-cifar10")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / "checkpoint_manifest.json"))
    args = p.parse_args(argv)

    torch.manual_seed(0)
    unet = DDPMFromScratchUNet.from_preset(args.preset)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    unet(torch.randn(1, unet.config.in_channels, 32, 32), torch.tensor([10])).sample.mean().backward()
    optimizer.step()
    ema = EMAModel(unet.parameters(), model_cls=DDPMFromScratchUNet, model_config=unet.config)
    accelerator = Accelerator(cpu=True)
    unet, optimizer = accelerator.prepare(unet, optimizer)

    save, manifest, verify = [], [], []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            folder = save_checkpoint(accelerator, root, repeat + 1, ema)
            save.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_manifest(folder)
            manifest.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert checkpoint_problem(folder) is None
            verify.append(time.perf_counter() - started)
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder)
    # The save includes one manifest already; what it costs without is save − manifest.
    results = {
        "preset": args.preset, "checkpoint_mb": size / 1e6, "repeats": args.repeats,
        "save_seconds": statistics.median(save), "manifest_seconds": statistics.median(manifest),
        "verify_seconds": statistics.median(verify),
        "manifest_fraction_of_save": statistics.median(m / s for m, s in zip(manifest, save)),
        "hash_mb_per_s": size / 1e6 / statistics.median(manifest),
        "machine": script_machine_info(),
    }
    save_results(Path(args.json), results)
    print(f"{args.preset}: checkpoint {results['checkpoint_mb']:.0f} MB; save {results['save_seconds']:.2f} s "
          f"(manifest included), manifest {results['manifest_seconds']:.2f} s "
          f"({100 * results['manifest_fraction_of_save']:.0f} % of the save, {results['hash_mb_per_s']:.0f} MB/s), "
          f"verify on resume {results['verify_seconds']:.2f} s")
    return results


if __name__ == "__main__":
    main()
