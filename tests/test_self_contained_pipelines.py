"""Every pipeline class is self-contained: a saved folder and a pushed repo load with the package's classes where
ddpm-from-scratch is installed, and with ``DiffusionPipeline.from_pretrained(…, trust_remote_code=True)`` where it
cannot be imported, and sample the same either way (issue 19, item 3).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

from ddpm_from_scratch import (
    BinomialDiffusionPipeline,
    BinomialDiffusionScheduler,
    DDPMFromScratchPipeline,
    DDPMFromScratchScheduler,
    DDPMFromScratchUNet,
    PointDiffusionPipeline,
    ToyDenoiser,
)
from test_hub import WITHOUT_THE_PACKAGE, subprocess_env

T = 20


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "DDPMFromScratchPipeline":
        unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=4,
                                   channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,),
                                   norm_num_groups=2)
        return DDPMFromScratchPipeline(unet.eval(), DDPMFromScratchScheduler(num_train_timesteps=T))
    if kind == "BinomialDiffusionPipeline":
        return BinomialDiffusionPipeline(ToyDenoiser(6, hidden_size=16, num_blocks=1, embedding_dim=8).eval(),
                                         BinomialDiffusionScheduler(num_train_timesteps=T))
    return PointDiffusionPipeline(ToyDenoiser(2, 4, hidden_size=16, num_blocks=1, embedding_dim=8).eval(),
                                  DDPMFromScratchScheduler(num_train_timesteps=T, clip_sample=False,
                                                           variance_type="learned_range"))


KINDS = ["DDPMFromScratchPipeline", "BinomialDiffusionPipeline", "PointDiffusionPipeline"]
CALL = {"DDPMFromScratchPipeline": dict(batch_size=2, num_inference_steps=5, output_type="pt"),
        "BinomialDiffusionPipeline": dict(batch_size=3, output_type="pt"),
        "PointDiffusionPipeline": dict(batch_size=4, output_type="pt")}


def draw(pipe, kind: str) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    output = pipe(generator=torch.Generator().manual_seed(0), **CALL[kind])
    return output.images if hasattr(output, "images") else output.samples


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each kind saved to a folder, with its samples."""
    root = tmp_path_factory.mktemp("self-contained")
    out = {}
    for kind in KINDS:
        pipe = tiny(kind)
        pipe.save_pretrained(root / kind)
        out[kind] = (root / kind, pipe, draw(pipe, kind))
    return out


def sources(kind, saved, hub) -> dict:
    folder, pipe, _ = saved[kind]
    repo = f"tester/{kind.lower()}"
    pipe.push_to_hub(repo, token=hub.token)  # the hub fixture is emptied for every test
    return {"folder": str(folder), "hub": repo}


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_folder_ships_the_pipelines_code_and_its_components(kind, saved):
    folder = saved[kind][0]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", kind]
    assert (folder / "pipeline.py").is_file() and (folder / "pipeline_utils.py").is_file()
    for name in ("unet", "scheduler"):
        stem = index[name][0]
        assert (folder / name / f"{stem}.py").is_file()


@pytest.mark.parametrize("source", ["folder", "hub"])
@pytest.mark.parametrize("kind", KINDS)
def test_with_the_package_its_own_classes_load_and_sample_the_same(kind, source, saved, hub, tmp_path):
    where = sources(kind, saved, hub)[source]
    _, pipe, expected = saved[kind]
    loaded = type(pipe).from_pretrained(where, cache_dir=tmp_path / "cache")
    assert type(loaded) is type(pipe)
    assert type(loaded.unet) is type(pipe.unet) and type(loaded.scheduler) is type(pipe.scheduler)
    torch.testing.assert_close(draw(loaded, kind), expected, rtol=0, atol=0)


def test_plain_diffusers_refuses_a_saved_folder_without_trust_remote_code(saved):
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(saved["DDPMFromScratchPipeline"][0])


WITHOUT_THE_PACKAGE_LOADS = WITHOUT_THE_PACKAGE + """
import torch
from diffusers import DiffusionPipeline

kind, where, target = sys.argv[1:4]
call = json.loads(sys.argv[4])
pipe = DiffusionPipeline.from_pretrained(where, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
output = pipe(generator=torch.Generator().manual_seed(0), **call)
torch.save(output.images if hasattr(output, "images") else output.samples, target)
print("REPORT" + json.dumps({
    "classes": [type(c).__module__ + "." + type(c).__name__ for c in (pipe, pipe.unet, pipe.scheduler)],
    "modules": sorted(m for m in sys.modules if m.startswith("ddpm_from_scratch"))}))
"""


@pytest.mark.parametrize("source", ["folder", "hub"])
@pytest.mark.parametrize("kind", KINDS)
def test_without_the_package_diffusers_loads_the_shipped_code_and_samples_the_same(kind, source, saved, hub,
                                                                                  tmp_path):
    where = sources(kind, saved, hub)[source]
    _, pipe, expected = saved[kind]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_PACKAGE_LOADS, kind, where, str(tmp_path / "samples.pt"),
         json.dumps(CALL[kind])],
        env=subprocess_env(hub, tmp_path / "home"), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["modules"] == []
    assert [name.rpartition(".")[2] for name in report["classes"]] == [
        kind, type(pipe.unet).__name__, type(pipe.scheduler).__name__]
    assert all(name.startswith("diffusers_modules.") for name in report["classes"])
    torch.testing.assert_close(torch.load(tmp_path / "samples.pt"), expected, rtol=0, atol=1e-6)
    assert "This modeling file might require" not in result.stderr  # the shipped files import nothing missing


def test_a_component_from_another_library_keeps_its_module_path_and_ships_no_code(tmp_path):
    from analytic_models import GaussianOptimalDenoiser  # an installed library's class, as far as saving goes

    pipe = DDPMFromScratchPipeline(unet=GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T),
                                   scheduler=DDPMFromScratchScheduler(num_train_timesteps=T))
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["unet"] == ["analytic_models", "GaussianOptimalDenoiser"]
    assert not list((tmp_path / "pipe" / "unet").glob("*.py"))
    assert (tmp_path / "pipe" / "scheduler" / "scheduling_ddpm.py").is_file()
    assert type(DDPMFromScratchPipeline.from_pretrained(tmp_path / "pipe").unet) is GaussianOptimalDenoiser
