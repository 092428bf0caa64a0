"""Export a ddpm-from-scratch pipeline as diffusers' own `DDPMPipeline`, which loads with no custom code.

    python scripts/export_diffusers.py SRC DST [--push_to_hub ID] [--private] [--token TOKEN]

SRC is a saved pipeline folder (a training run's output) or a Hub repo id pushed by this package
(`--revision` picks a branch or commit of it). DST is the folder to write: a `UNet2DModel` with the same
weights, a `DDPMScheduler` with the same config (`DDPMFromScratchPipeline.to_diffusers`), a model card and
the source's sample grids. `--push_to_hub ID` uploads DST to the Hub repo ID as well. The exported pipeline
draws the same samples as the original for the same seed:

    from diffusers import DDPMPipeline
    pipe = DDPMPipeline.from_pretrained(DST_OR_ID)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ddpm_from_scratch.hub.loading import load_pipeline_or_exit
from ddpm_from_scratch.hub.upload import HubUploadError, push_pipeline_folder

CARD = """
# {title}

diffusers' own `DDPMPipeline` (`UNet2DModel` + `DDPMScheduler`), exported from `{source}` with
[ddpm-from-scratch](https://pypi.org/project/ddpm-from-scratch/)'s `to_diffusers()`: the same weights and
noise schedule, so the same samples for the same seed. It needs diffusers only, no custom code:

```python
import torch
from diffusers import DDPMPipeline

pipe = DDPMPipeline.from_pretrained("{load_id}")
images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0), num_inference_steps=1000).images
```
{grid}"""

DEFAULT_METADATA = {"library_name": "diffusers", "pipeline_tag": "unconditional-image-generation"}
DEFAULT_LICENSE = "apache-2.0"
TAGS = ["ddpm", "diffusion", "unconditional-image-generation", "ddpm-from-scratch"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="A saved DDPMFromScratchPipeline folder or a Hub repo id.")
    p.add_argument("dst", help="The folder to write the DDPMPipeline to.")
    p.add_argument("--revision", default=None, help="Branch, tag or commit of SRC when it is a Hub repo.")
    p.add_argument("--push_to_hub", metavar="ID", default=None, help="Also upload DST to this Hub repo.")
    p.add_argument("--private", action="store_true", help="Create the Hub repo private.")
    p.add_argument("--token", default=None,
                   help="Hub token (default: HF_TOKEN, then the `hf auth login` cache). Never written to disk.")
    p.add_argument("--overwrite", action="store_true", help="Write into DST even if it is not empty.")
    return p.parse_args(argv)


def _source_card_data(src: str, token: str | None, revision: str | None):
    """The source model card's metadata (license, datasets, evaluation results), or None without a card."""
    from huggingface_hub import ModelCard

    try:
        if Path(src).is_dir():
            readme = Path(src) / "README.md"
            return ModelCard.load(readme).data if readme.is_file() else None
        kwargs = {"token": token, **({"revision": revision} if revision else {})}
        return ModelCard.load(src, **kwargs).data
    except Exception:  # no card, or none reachable: the defaults will do
        return None


def export(src: str, dst: str | Path, token: str | None = None, revision: str | None = None,
           push_to_hub: str | None = None, private: bool = False, overwrite: bool = False) -> Path:
    """Write SRC as a `DDPMPipeline` into DST (and push it); returns DST."""
    from huggingface_hub import ModelCard, ModelCardData

    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise SystemExit(f"{dst} exists and is not empty; pass --overwrite to write into it anyway.")
    load_kwargs = {"token": token} if token else {}
    if revision:
        load_kwargs["revision"] = revision
    pipeline = load_pipeline_or_exit(src, "SRC", **load_kwargs)
    try:
        plain = pipeline.to_diffusers()
    except ValueError as error:  # a network or variance plain diffusers cannot express
        raise SystemExit(f"error: SRC {src} cannot be exported as a DDPMPipeline: {error}") from None
    dst.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(dst)

    grid = None
    if Path(src).is_dir() and (Path(src) / "samples").is_dir():
        shutil.copytree(Path(src) / "samples", dst / "samples", dirs_exist_ok=True)
        grids = sorted((dst / "samples").glob("*.png"))
        grid = grids[-1].relative_to(dst).as_posix() if grids else None
    data = _source_card_data(src, token, revision) or ModelCardData()
    tags = list(data.tags or [])
    for key, value in DEFAULT_METADATA.items():
        setattr(data, key, value)
    data.license = data.license or DEFAULT_LICENSE
    data.tags = tags + [tag for tag in TAGS if tag not in tags]
    load_id = push_to_hub or str(dst)
    text = CARD.format(title=push_to_hub or dst.name, source=src, load_id=load_id,
                       grid=f"\n![samples]({grid})\n" if grid else "")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
    card.save(dst / "README.md")

    if push_to_hub:
        try:
            url = push_pipeline_folder(dst, push_to_hub, token=token, private=private,
                                       commit_message=f"Export {src} as a diffusers DDPMPipeline")
        except HubUploadError as error:
            raise SystemExit(str(error)) from error
        print(f"Pushed to {url}")
    print(f"Wrote diffusers' DDPMPipeline to {dst}/: load it with DDPMPipeline.from_pretrained({load_id!r}).")
    return dst


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    return export(args.src, args.dst, token=args.token, revision=args.revision, push_to_hub=args.push_to_hub,
                  private=args.private, overwrite=args.overwrite)


if __name__ == "__main__":
    main(sys.argv[1:])
