"""Pipelines saved and pushed by an earlier package still load and sample the same (issue 19, item 2).

The fixtures in ``fixtures/saved_pipelines`` were written once by ``fixtures/make_saved_pipelines.py`` with the
package as it was before it was split into sub-packages; they stand for the folders and Hub repos users have.
A folder names its components by dotted module path (``ddpm_from_scratch.unet``), a pushed repo by Hub file stem
(``unet``, ``pipeline``); both must keep resolving to the package's classes, with no code from the folder run.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ddpm_from_scratch

FIXTURES = Path(__file__).parent / "fixtures" / "saved_pipelines"
KINDS = sorted(path.name for path in FIXTURES.iterdir() if path.is_dir())
# Which class loads each kind, and the classes its components must come back as.
EXPECTED = {
    "ddpm": ("DDPMFromScratchPipeline", "DDPMFromScratchUNet", "DDPMFromScratchScheduler"),
    "ddpm-learned-variance": ("DDPMFromScratchPipeline", "DDPMFromScratchUNet", "DDPMFromScratchScheduler"),
    "ddpm-analytic": ("DDPMFromScratchPipeline", "DDPMFromScratchUNet", "AnalyticDPMScheduler"),
    "ddpm-ddim": ("DDPMFromScratchPipeline", "DDPMFromScratchUNet", "DDIMScheduler"),
    "binomial": ("BinomialDiffusionPipeline", "ToyDenoiser", "BinomialDiffusionScheduler"),
    "point": ("PointDiffusionPipeline", "ToyDenoiser", "DDPMFromScratchScheduler"),
}


def test_every_kind_of_pipeline_has_a_fixture():
    assert KINDS == sorted(EXPECTED)


def saved_layout(kind: str, layout: str, tmp_path: Path) -> Path:
    """The fixture as a folder: ``folder`` as saved, or ``hub`` as pushed (stem entries, no code files)."""
    folder = FIXTURES / kind / "folder"
    if layout == "folder":
        return folder
    repo = tmp_path / "repo"
    shutil.copytree(folder, repo)
    shutil.copyfile(FIXTURES / kind / "hub_model_index.json", repo / "model_index.json")
    return repo


def draw(pipe, kind: str) -> torch.Tensor:
    call = json.loads((FIXTURES / kind / "call.json").read_text())
    pipe.set_progress_bar_config(disable=True)
    output = pipe(generator=torch.Generator().manual_seed(0), **call)
    return output.images if hasattr(output, "images") else output.samples


@pytest.mark.parametrize("layout", ["folder", "hub"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_a_saved_pipeline_loads_into_the_packages_classes(kind, layout, tmp_path):
    pipeline_name, unet_name, scheduler_name = EXPECTED[kind]
    source = saved_layout(kind, layout, tmp_path)
    pipe = getattr(ddpm_from_scratch, pipeline_name).from_pretrained(source)
    assert type(pipe).__name__ == pipeline_name
    assert type(pipe.unet) is getattr(ddpm_from_scratch, unet_name)
    assert type(pipe.scheduler).__name__ == scheduler_name
    assert not list(source.rglob("*.py"))  # so no code from the folder can have run


@pytest.mark.parametrize("layout", ["folder", "hub"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_a_saved_pipeline_samples_what_it_sampled_when_it_was_saved(kind, layout, tmp_path):
    pipeline_name = EXPECTED[kind][0]
    pipe = getattr(ddpm_from_scratch, pipeline_name).from_pretrained(saved_layout(kind, layout, tmp_path))
    expected = load_file(FIXTURES / kind / "samples.safetensors")["samples"]
    torch.testing.assert_close(draw(pipe, kind), expected, rtol=0, atol=1e-6)
