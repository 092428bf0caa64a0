#!/usr/bin/env python
"""Adopt a DDPM trained with diffusers: `python scripts/convert_from_diffusers.py SRC DST`.

SRC is diffusers' own `DDPMPipeline` (`UNet2DModel` + `DDPMScheduler`): a folder written by its
`save_pretrained` (diffusers' train_unconditional.py example writes one) or a Hub repo id such as
google/ddpm-cifar10-32 (`--revision` picks a branch or commit). DST becomes a `DDPMFromScratchPipeline`
with the same weights and noise schedule (`DDPMFromScratchPipeline.from_diffusers`): the same samples for a
seed, and the variational bound in bits/dim straight away (`python scripts/evaluate.py DST`). The mirror of
scripts/export_diffusers.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddpm_from_scratch.hub.loading import exit_with_usage_error, load_pipeline_or_exit

CARD = """---
library_name: diffusers
pipeline_tag: unconditional-image-generation
tags: [ddpm, diffusion, unconditional-image-generation, ddpm-from-scratch]
---

# {title}

A `DDPMFromScratchPipeline` converted from diffusers' `DDPMPipeline` at `{source}`{revision} with
[ddpm-from-scratch](https://pypi.org/project/ddpm-from-scratch/)'s `from_diffusers()`: the same weights and
noise schedule, so the same samples for the same seed, plus the variational bound.

```python
from ddpm_from_scratch import DDPMFromScratchPipeline

pipe = DDPMFromScratchPipeline.from_pretrained("{load_id}")
```

Evaluate it (bits/dim on held-out images): `python scripts/evaluate.py {load_id} [--data_dir IMAGES]`.

<!-- evaluation:start -->
<!-- evaluation:end -->
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="A diffusers DDPMPipeline folder or Hub repo id.")
    p.add_argument("dst", help="The folder to write the DDPMFromScratchPipeline to.")
    p.add_argument("--revision", default=None, help="Branch, tag or commit of SRC when it is a Hub repo.")
    p.add_argument("--token", default=None, help="Hub token for a private SRC (default: HF_TOKEN or the login cache).")
    p.add_argument("--overwrite", action="store_true", help="Write into DST even if it is not empty.")
    return p.parse_args(argv)


def convert(src: str, dst: str | Path, revision: str | None = None, token: str | None = None,
            overwrite: bool = False) -> Path:
    """Write SRC (a diffusers DDPMPipeline) as a DDPMFromScratchPipeline into DST; returns DST."""
    from diffusers import DDPMPipeline

    from ddpm_from_scratch import DDPMFromScratchPipeline

    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        exit_with_usage_error(f"DST {str(dst)!r} exists and is not empty; pass --overwrite to write into it anyway")
    kwargs = {key: value for key, value in (("revision", revision), ("token", token)) if value}
    source = load_pipeline_or_exit(src, "SRC", pipeline_class=DDPMPipeline, **kwargs)
    try:
        pipeline = DDPMFromScratchPipeline.from_diffusers(source)
    except (TypeError, ValueError) as error:
        exit_with_usage_error(f"SRC {src!r} cannot be converted: {error}")
    pipeline.save_pretrained(dst)
    (dst / "README.md").write_text(CARD.format(title=dst.name, source=src, load_id=str(dst),
                                               revision=f" (revision {revision})" if revision else ""))
    print(f"Wrote a DDPMFromScratchPipeline to {dst}/: DDPMFromScratchPipeline.from_pretrained({str(dst)!r}); "
          f"bits/dim with `python scripts/evaluate.py {dst}`.", file=sys.stderr)
    return dst


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    return convert(args.src, args.dst, revision=args.revision, token=args.token, overwrite=args.overwrite)


if __name__ == "__main__":
    main(sys.argv[1:])
