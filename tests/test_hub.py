"""The Hub round trip, for real, against tests/hub_server.py (a local stand-in for the Hub's HTTP API).

A pushed repo loads three ways: with this package (no remote code), with diffusers alone
(`trust_remote_code=True`, in a subprocess where ddpm_from_scratch cannot be imported), and as
diffusers' own DDPMPipeline (`to_diffusers`, scripts/export_diffusers.py).
"""

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.pipelines import chain_prefix, guidance, pipeline_ddpm, pipeline_utils
from ddpm_from_scratch.schedulers import scheduling_ddpm
from ddpm_from_scratch.models import unet
from ddpm_from_scratch.hub.upload import HubUploadError, hub_upload_files, push_pipeline_folder
from ddpm_from_scratch.hub.model_card import render_model_card

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "model_card.md"
EXPORT = ROOT / "scripts" / "export_diffusers.py"
CODE = {"pipeline.py": pipeline_ddpm.__file__, "pipeline_utils.py": pipeline_utils.__file__,
        "guidance.py": guidance.__file__, "chain_prefix.py": chain_prefix.__file__, "unet/unet.py": unet.__file__,
        "scheduler/scheduling_ddpm.py": scheduling_ddpm.__file__}
PIPELINE_FILES = {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "scheduler/scheduler_config.json"}


def tiny_pipeline(seed: int = 0, **scheduler_config) -> DDPMFromScratchPipeline:
    torch.manual_seed(seed)
    model = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8,
                                channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,),
                                norm_num_groups=4).eval()
    pipe = DDPMFromScratchPipeline(unet=model, scheduler=DDPMFromScratchScheduler(num_train_timesteps=20,
                                                                                    **scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def samples(pipe, seed: int = 0) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(seed), num_inference_steps=5,
                  output_type="np").images
    return torch.as_tensor(images)


def training_output(folder: Path, pipe: DDPMFromScratchPipeline, repo_id: str = "tester/tiny-ddpm") -> Path:
    """A folder like scripts/train.py leaves: pipeline, card, grids, and training state."""
    pipe.save_pretrained(folder)
    facts = {name: "unknown" for name in ("dataset", "model_config", "num_parameters", "resolution", "channels",
                                          "train_steps", "batch_size", "learning_rate", "mixed_precision", "ema",
                                          "wall_time", "final_loss", "num_train_timesteps", "beta_schedule",
                                          "predicts", "loss", "variance", "timestep_sampler", "classes")}
    facts.update(repo_id=repo_id, sample_grid="samples/step-20.png")
    (folder / "README.md").write_text(render_model_card(TEMPLATE.read_text(), facts))
    (folder / "samples").mkdir()
    for step in (10, 20):
        (folder / "samples" / f"step-{step}.png").write_bytes(b"\x89PNG fake grid %d" % step)
    for checkpoint in ("checkpoint-10", ".checkpoint-20.tmp"):
        (folder / checkpoint / "ema").mkdir(parents=True)
        for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "model.safetensors",
                     "training_state.json", "ema/diffusion_pytorch_model.safetensors"):
            (folder / checkpoint / name).write_bytes(b"state")
    (folder / "logs" / "train").mkdir(parents=True)
    (folder / "logs" / "train" / "events.out.tfevents.1.host").write_bytes(b"tensorboard")
    (folder / "optimizer.pt").write_bytes(b"optimizer state")
    return folder


def digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        sha.update(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            sha.update(path.read_bytes())
            sha.update(str(path.stat().st_mtime_ns).encode())
    return sha.hexdigest()


def subprocess_env(hub, home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "PYTHONPATH", "DIFFUSERS_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               OMP_NUM_THREADS="1", **extra)
    return env


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions on a shared 2-core machine: two OpenMP threads wait on each other for milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A Hub cache for this test only, also where a call without `cache_dir` looks."""
    import huggingface_hub.constants

    path = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(path))
    return path


# ------------------------------------------------------------------------------------------ what is pushed


def test_push_uploads_pipeline_code_card_and_samples_but_no_training_state(hub, tmp_path):
    folder = training_output(tmp_path / "run", tiny_pipeline())
    before = digest(folder)
    url = push_pipeline_folder(folder, "tester/tiny-ddpm", token=hub.token)

    assert url.oid == hub.head("tester/tiny-ddpm") and "tester/tiny-ddpm" in url
    files = hub.files("tester/tiny-ddpm")
    assert set(files) == PIPELINE_FILES | set(CODE) | {".gitattributes", "README.md", "samples/step-10.png",
                                                       "samples/step-20.png"}
    for path, source in CODE.items():
        assert files[path] == Path(source).read_bytes()
    index = json.loads(files["model_index.json"])
    assert index["_class_name"] == ["pipeline", "DDPMFromScratchPipeline"]
    assert index["unet"] == ["unet", "DDPMFromScratchUNet"]
    assert index["scheduler"] == ["scheduling_ddpm", "DDPMFromScratchScheduler"]
    assert files["README.md"] == (folder / "README.md").read_bytes()
    assert digest(folder) == before  # the local folder is exactly as it was


def test_save_pretrained_writes_the_layout_push_to_hub_uploads(hub, tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "saved")
    pipe.push_to_hub("tester/pushed", token=hub.token)
    saved = {p.relative_to(tmp_path / "saved").as_posix(): p.read_bytes()
             for p in (tmp_path / "saved").rglob("*") if p.is_file()}
    pushed = {path: data for path, data in hub.files("tester/pushed").items()
              if path not in (".gitattributes", "README.md")}
    assert saved == pushed
    assert set(saved) == PIPELINE_FILES | set(CODE)
    index = json.loads(saved["model_index.json"])
    assert index["_class_name"] == ["pipeline", "DDPMFromScratchPipeline"]
    assert (index["unet"], index["scheduler"]) == (["unet", "DDPMFromScratchUNet"],
                                                   ["scheduling_ddpm", "DDPMFromScratchScheduler"])


def test_an_earlier_packages_folder_gets_the_code_in_the_upload_only(hub, tmp_path):
    folder = training_output(tmp_path / "run", tiny_pipeline())
    for path in CODE:
        (folder / path).unlink()
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_class_name="DDPMFromScratchPipeline", unet=["ddpm_from_scratch.unet", "DDPMFromScratchUNet"],
                 scheduler=["ddpm_from_scratch.scheduling_ddpm", "DDPMFromScratchScheduler"])
    (folder / "model_index.json").write_text(json.dumps(index))
    before = digest(folder)
    push_pipeline_folder(folder, "tester/old", token=hub.token)
    files = hub.files("tester/old")
    assert all(files[path] == Path(source).read_bytes() for path, source in CODE.items())
    assert json.loads(files["model_index.json"])["unet"] == ["unet", "DDPMFromScratchUNet"]
    assert digest(folder) == before


def test_the_upload_plan_skips_every_kind_of_training_state(tmp_path):
    folder = training_output(tmp_path / "run", tiny_pipeline())
    planned = set(hub_upload_files(folder))
    assert not [p for p in planned if "checkpoint" in p or p.startswith("logs/") or "optimizer" in p]
    assert {"samples/step-10.png", "samples/step-20.png", "README.md"} <= planned


def test_code_is_shipped_for_the_packages_classes_under_any_module_name_unless_the_folder_has_it(tmp_path):
    folder = tmp_path / "saved"
    tiny_pipeline().save_pretrained(folder)
    for path in CODE:
        (folder / path).unlink()
    index = json.loads((folder / "model_index.json").read_text())
    # As saved from a pipeline loaded with trust_remote_code, or from a clone of a pushed repo.
    index.update(unet=["diffusers_modules.local.unet", "DDPMFromScratchUNet"],
                 scheduler=["scheduling_ddpm", "DDPMFromScratchScheduler"])
    (folder / "model_index.json").write_text(json.dumps(index))
    plan = hub_upload_files(folder)
    assert {path: Path(source) for path, source in CODE.items()} == {p: plan[p] for p in CODE}
    assert json.loads(plan["model_index.json"])["unet"] == ["unet", "DDPMFromScratchUNet"]

    (folder / "unet" / "unet.py").write_text("# the folder's own copy\n")
    assert hub_upload_files(folder)["unet/unet.py"] == folder / "unet" / "unet.py"


def test_a_local_clone_of_a_pushed_repo_loads_with_the_package(tmp_path):
    pipe = tiny_pipeline()
    clone = tmp_path / "clone"
    for path, data in hub_upload_files(training_output(tmp_path / "run", pipe)).items():
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_bytes(data if isinstance(data, bytes) else data.read_bytes())
    loaded = DDPMFromScratchPipeline.from_pretrained(clone)
    assert type(loaded.unet) is DDPMFromScratchUNet
    torch.testing.assert_close(samples(loaded), samples(pipe), atol=0, rtol=0)


def test_pipe_push_to_hub_ships_code_and_a_card_rendered_from_the_template(hub, tmp_path):
    pipe = tiny_pipeline()
    pipe.push_to_hub("tester/pushed", token=hub.token)
    files = hub.files("tester/pushed")
    assert PIPELINE_FILES | set(CODE) <= set(files)

    card = files["README.md"].decode()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == "diffusers"
    assert metadata["pipeline_tag"] == "unconditional-image-generation"
    assert "ddpm-from-scratch" in metadata["tags"] and metadata["license"] == "apache-2.0"
    assert f"{sum(p.numel() for p in pipe.unet.parameters()):,} parameters" in card
    assert "8×8, 1 channel(s)" in card and "linear, 20 timesteps" in card and "unknown" in card
    assert "$" not in card.replace("$$", "")
    # The three ways to load it.
    assert 'DDPMFromScratchPipeline.from_pretrained("tester/pushed")' in card
    assert 'DiffusionPipeline.from_pretrained("tester/pushed", trust_remote_code=True)' in card
    assert "DDPMPipeline.from_pretrained" in card and "export_diffusers.py tester/pushed" in card

    # A card already on the Hub (with evaluation numbers, say) is kept by the next push.
    from huggingface_hub import HfApi

    HfApi(token=hub.token).upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# kept\n", path_in_repo="README.md",
                                       repo_id="tester/pushed")
    pipe.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="tester/pushed", token=hub.token)
    assert hub.files("tester/pushed")["README.md"] == b"---\nlicense: mit\n---\n# kept\n"
    # save_pretrained(push_to_hub=True) writes the folder and uploads it as it is.
    assert (tmp_path / "local" / "pipeline.py").read_bytes() == hub.files("tester/pushed")["pipeline.py"]
    assert json.loads(hub.files("tester/pushed")["model_index.json"])["unet"] == ["unet", "DDPMFromScratchUNet"]


# ------------------------------------------------------------------------------------------- way 1: package


def test_with_the_package_installed_a_pushed_repo_loads_without_remote_code(hub, tmp_path, cache):
    pipe = tiny_pipeline()
    push_pipeline_folder(training_output(tmp_path / "run", pipe), "tester/tiny-ddpm", token=hub.token)

    loaded = DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache)
    assert type(loaded.unet) is DDPMFromScratchUNet and type(loaded.scheduler) is DDPMFromScratchScheduler
    torch.testing.assert_close(samples(loaded), samples(pipe), atol=0, rtol=0)
    # The repo's code files were not even downloaded, nor the samples or the card.
    snapshot = Path(DDPMFromScratchPipeline.download("tester/tiny-ddpm", cache_dir=cache))
    assert not list(snapshot.rglob("*.py")) and not (snapshot / "samples").exists()

    unet_only = DDPMFromScratchUNet.from_pretrained("tester/tiny-ddpm", subfolder="unet", cache_dir=cache)
    assert all(torch.equal(a, b) for a, b in zip(unet_only.state_dict().values(), pipe.unet.state_dict().values()))
    scheduler = DDPMFromScratchScheduler.from_pretrained("tester/tiny-ddpm", subfolder="scheduler", cache_dir=cache)
    assert scheduler.config.num_train_timesteps == 20
    # Components passed in are not downloaded again, as in diffusers.
    ddim = DDIMScheduler(num_train_timesteps=20)
    with_ddim = DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache, scheduler=ddim)
    assert with_ddim.scheduler is ddim


def test_two_pushes_then_the_older_revision_and_a_branch(hub, tmp_path, cache):
    first, second = tiny_pipeline(seed=0), tiny_pipeline(seed=1)
    old = push_pipeline_folder(training_output(tmp_path / "a", first), "tester/tiny-ddpm", token=hub.token)
    new = push_pipeline_folder(training_output(tmp_path / "b", second), "tester/tiny-ddpm", token=hub.token)
    assert old.oid != new.oid

    latest = DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache)
    older = DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", revision=old.oid, cache_dir=cache)
    torch.testing.assert_close(samples(latest), samples(second), atol=0, rtol=0)
    torch.testing.assert_close(samples(older), samples(first), atol=0, rtol=0)
    unet_older = DDPMFromScratchUNet.from_pretrained("tester/tiny-ddpm", subfolder="unet", revision=old.oid,
                                                     cache_dir=cache)
    assert torch.equal(next(unet_older.parameters()), next(first.unet.parameters()))

    push_pipeline_folder(tmp_path / "a", "tester/tiny-ddpm", token=hub.token, revision="dev")
    on_dev = DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", revision="dev", cache_dir=cache)
    torch.testing.assert_close(samples(on_dev), samples(first), atol=0, rtol=0)
    assert hub.head("tester/tiny-ddpm") == new.oid  # main did not move


def test_when_the_hub_is_down_the_cache_is_used(hub, tmp_path, cache):
    pipe = tiny_pipeline()
    push_pipeline_folder(training_output(tmp_path / "run", pipe), "tester/tiny-ddpm", token=hub.token)
    DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache)
    DDPMFromScratchUNet.from_pretrained("tester/tiny-ddpm", subfolder="unet", cache_dir=cache)

    hub.stop()
    requests = len(hub.requests)
    for kwargs in ({}, {"local_files_only": True}):
        loaded = DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache, **kwargs)
        torch.testing.assert_close(samples(loaded), samples(pipe), atol=0, rtol=0)
        DDPMFromScratchScheduler.from_pretrained("tester/tiny-ddpm", subfolder="scheduler", cache_dir=cache, **kwargs)
    # (Without local_files_only, diffusers' ModelMixin.from_pretrained also gets there, after ~20 s of retries
    # for a sharded-checkpoint index it looks for; HF_HUB_OFFLINE=1 skips them: see the next test.)
    DDPMFromScratchUNet.from_pretrained("tester/tiny-ddpm", subfolder="unet", cache_dir=cache, local_files_only=True)
    with pytest.raises(EnvironmentError):
        DDPMFromScratchPipeline.from_pretrained("tester/never-downloaded", cache_dir=cache, local_files_only=True)
    assert len(hub.requests) == requests


OFFLINE_SCRIPT = """
import sys, torch
from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchUNet
cache, out = sys.argv[1], sys.argv[2]
pipe = DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache)
DDPMFromScratchUNet.from_pretrained("tester/tiny-ddpm", subfolder="unet", cache_dir=cache)
pipe.set_progress_bar_config(disable=True)
images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5, output_type="np").images
torch.save(torch.as_tensor(images), out)
"""


def test_hf_hub_offline_loads_from_the_cache_without_a_single_request(hub, tmp_path, cache):
    pipe = tiny_pipeline()
    push_pipeline_folder(training_output(tmp_path / "run", pipe), "tester/tiny-ddpm", token=hub.token)
    DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache)
    DDPMFromScratchUNet.from_pretrained("tester/tiny-ddpm", subfolder="unet", cache_dir=cache)

    requests = len(hub.requests)
    result = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(cache), str(tmp_path / "offline.pt")],
                            env=subprocess_env(hub, tmp_path / "home", HF_HUB_OFFLINE="1"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(hub.requests) == requests  # the server is up, but nobody asked it anything
    torch.testing.assert_close(torch.load(tmp_path / "offline.pt"), samples(pipe), atol=1e-6, rtol=0)


def test_a_private_repo_needs_the_token(hub, tmp_path, cache):
    pipe = tiny_pipeline()
    push_pipeline_folder(training_output(tmp_path / "run", pipe), "tester/secret", token=hub.token, private=True)
    assert hub.repos["tester/secret"].private
    with pytest.raises(EnvironmentError):
        DDPMFromScratchPipeline.from_pretrained("tester/secret", cache_dir=cache)
    loaded = DDPMFromScratchPipeline.from_pretrained("tester/secret", cache_dir=cache, token=hub.token)
    torch.testing.assert_close(samples(loaded), samples(pipe), atol=0, rtol=0)


# ------------------------------------------------------------------------------------ way 2: diffusers only

WITHOUT_THE_PACKAGE = """
import importlib.abc, json, sys

class NoDDPMFromScratch(importlib.abc.MetaPathFinder):
    # The package is installed (editable) in this venv: make it unimportable here.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ddpm_from_scratch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoDDPMFromScratch())
"""

REMOTE_CODE_SCRIPT = WITHOUT_THE_PACKAGE + """
report = {}
try:
    import ddpm_from_scratch  # noqa: F401
    report["importable"] = True
except ModuleNotFoundError:
    report["importable"] = False

import torch
from diffusers import DiffusionPipeline

try:
    DiffusionPipeline.from_pretrained("tester/tiny-ddpm")
    report["refused"] = None
except ValueError as error:
    report["refused"] = str(error)
pipe = DiffusionPipeline.from_pretrained("tester/tiny-ddpm", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
report["classes"] = [type(c).__module__ + "." + type(c).__name__ for c in (pipe, pipe.unet, pipe.scheduler)]
images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5, output_type="np").images
torch.save(torch.as_tensor(images), sys.argv[1])
# Fine-tuned without the package, pushed again: the code goes with it.
with torch.no_grad():
    next(pipe.unet.parameters()).add_(0.5)
report["pushed"] = str(pipe.push_to_hub("tester/from-remote", token=sys.argv[2]))
report["modules"] = sorted(m for m in sys.modules if m.startswith("ddpm_from_scratch"))
print("REPORT" + json.dumps(report))
"""


def test_diffusers_alone_loads_the_repo_with_trust_remote_code_and_only_then(hub, tmp_path, cache):
    pipe = tiny_pipeline()
    push_pipeline_folder(training_output(tmp_path / "run", pipe), "tester/tiny-ddpm", token=hub.token)

    result = subprocess.run([sys.executable, "-c", REMOTE_CODE_SCRIPT, str(tmp_path / "remote.pt"), hub.token],
                            env=subprocess_env(hub, tmp_path / "home"), cwd=tmp_path, capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["importable"] is False and report["modules"] == []
    assert report["refused"] and "trust_remote_code" in report["refused"]
    assert report["classes"] == ["diffusers_modules.local.pipeline.DDPMFromScratchPipeline",
                                 "diffusers_modules.local.unet.DDPMFromScratchUNet",
                                 "diffusers_modules.local.scheduling_ddpm.DDPMFromScratchScheduler"]
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), samples(pipe), atol=1e-6, rtol=0)
    assert "This modeling file might require" not in result.stderr  # the shipped files import nothing missing

    # What the package-less pipeline pushed loads back with the package, with its changed weight.
    files = hub.files("tester/from-remote")
    assert all(files[path] == Path(source).read_bytes() for path, source in CODE.items())
    again = DDPMFromScratchPipeline.from_pretrained("tester/from-remote", cache_dir=cache)
    assert type(again.unet) is DDPMFromScratchUNet
    torch.testing.assert_close(next(again.unet.parameters()), next(pipe.unet.parameters()) + 0.5)


# ---------------------------------------------------------------------------------- way 3: plain diffusers


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large_log"])
def test_to_diffusers_is_a_plain_ddpm_pipeline_with_the_same_samples(variance_type):
    pipe = tiny_pipeline(variance_type=variance_type)
    plain = pipe.to_diffusers()
    assert type(plain) is DDPMPipeline and type(plain.unet) is UNet2DModel and type(plain.scheduler) is DDPMScheduler
    ours, theirs = samples(pipe), samples(plain)
    assert torch.isfinite(theirs).all()
    assert (ours - theirs).abs().max() <= 1e-5
    public = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_") and k != "variance_type"}
    assert {k: plain.scheduler.config[k] for k in public} == public


def load_export_script():
    spec = importlib.util.spec_from_file_location("export_diffusers", EXPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_script_refuses_a_network_diffusers_cannot_express_in_one_line(tmp_path):
    plain_network = tiny_pipeline()
    pipe = DDPMFromScratchPipeline(
        unet=DDPMFromScratchUNet.from_config(plain_network.unet.config, fourier_feature_exponents=[4]),
        scheduler=plain_network.scheduler)
    pipe.save_pretrained(tmp_path / "run")
    with pytest.raises(SystemExit, match=r"SRC .*run cannot be exported.*fourier_feature_exponents=\[4\]"):
        load_export_script().main([str(tmp_path / "run"), str(tmp_path / "plain")])
    assert not (tmp_path / "plain").exists()


def test_export_script_writes_and_pushes_a_plain_ddpm_pipeline(hub, tmp_path, cache):
    pipe = tiny_pipeline()
    run = training_output(tmp_path / "run", pipe)
    push_pipeline_folder(run, "tester/tiny-ddpm", token=hub.token)
    script = load_export_script()

    local = script.main([str(run), str(tmp_path / "plain")])  # from a folder, written only
    from_hub = script.main(["tester/tiny-ddpm", str(tmp_path / "plain-hub"), "--push_to_hub", "tester/plain",
                            "--token", hub.token])
    for folder in (local, from_hub):
        assert not list(folder.rglob("*.py"))
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["diffusers", "UNet2DModel"]
        loaded = DDPMPipeline.from_pretrained(folder)
        assert (samples(loaded) - samples(pipe)).abs().max() <= 1e-5
    assert (local / "samples" / "step-20.png").is_file()
    card = (from_hub / "README.md").read_text()
    assert "library_name: diffusers" in card and 'DDPMPipeline.from_pretrained("tester/plain")' in card

    files = hub.files("tester/plain")
    assert not [path for path in files if path.endswith(".py")]
    assert json.loads(files["model_index.json"])["_class_name"] == "DDPMPipeline"
    loaded = DDPMPipeline.from_pretrained("tester/plain", cache_dir=cache)
    assert (samples(loaded) - samples(pipe)).abs().max() <= 1e-5
    with pytest.raises(SystemExit):  # DST is not empty any more
        script.main([str(run), str(tmp_path / "plain")])


# ------------------------------------------------------------------------------------------ tokens, failures


def test_the_token_comes_from_the_usual_places_and_is_never_written(hub, tmp_path, tmp_path_factory, cache,
                                                                     monkeypatch, caplog, capsys):
    import huggingface_hub.constants

    caplog.set_level(logging.DEBUG)
    pipe = tiny_pipeline()
    run = training_output(tmp_path / "run", pipe)

    monkeypatch.setenv("HF_TOKEN", hub.token)  # 1. HF_TOKEN
    push_pipeline_folder(run, "tester/tiny-ddpm")
    monkeypatch.delenv("HF_TOKEN")
    login = tmp_path_factory.mktemp("login") / "token"  # 2. the login cache, outside the folders grepped below
    login.write_text(hub.token)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(login))
    pipe.push_to_hub("tester/pushed")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "none"))
    load_export_script().main([str(run), str(tmp_path / "plain"), "--push_to_hub", "tester/plain",  # 3. argument
                               "--token", hub.token])
    DDPMFromScratchPipeline.from_pretrained("tester/tiny-ddpm", cache_dir=cache, token=hub.token)
    assert {"tester/tiny-ddpm", "tester/pushed", "tester/plain"} <= set(hub.repos)
    assert hub.authorized_requests > 0

    secret = hub.token.encode()
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 20
    assert not [path for path in written if secret in path.read_bytes()]
    assert not [path for path, data in hub.stored_blobs() if secret in data]
    assert not [request for request in hub.requests if hub.token in request[1]]
    captured = capsys.readouterr()
    assert hub.token not in caplog.text + captured.out + captured.err


def test_without_a_token_the_upload_is_refused_naming_repo_and_status(hub, tmp_path):
    folder = training_output(tmp_path / "run", tiny_pipeline())
    with pytest.raises(HubUploadError, match=r"'tester/tiny-ddpm' failed: HTTP 401") as error:
        push_pipeline_folder(folder, "tester/tiny-ddpm")
    assert error.value.status == 401 and error.value.repo_id == "tester/tiny-ddpm"


@pytest.mark.parametrize("failure", ["create 403", "not my namespace", "commit 500", "commit 403"])
def test_a_failed_upload_says_so_and_leaves_the_folder_untouched(hub, tmp_path, failure):
    folder = training_output(tmp_path / "run", tiny_pipeline())
    before = digest(folder)
    repo_id, status = ("someone-else/tiny-ddpm", 403) if failure == "not my namespace" else ("tester/tiny-ddpm", None)
    if status is None:
        route, status = failure.split()
        hub.fail[route] = status = int(status)
    with pytest.raises(HubUploadError, match=rf"Uploading .* to the Hub repo '{repo_id}' failed: HTTP {status}"):
        push_pipeline_folder(folder, repo_id, token=hub.token)
    assert digest(folder) == before
    repo = hub.repos.get(repo_id)
    assert repo is None or [c.message for c in repo.commits.values()] == ["initial commit"]


ANALYTIC_REMOTE_SCRIPT = WITHOUT_THE_PACKAGE + """
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("tester/analytic", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5, output_type="np").images
torch.save(torch.as_tensor(images), sys.argv[1])
print("REPORT" + json.dumps({"scheduler": type(pipe.scheduler).__module__ + "." + type(pipe.scheduler).__name__,
                             "modules": sorted(m for m in sys.modules if m.startswith("ddpm_from_scratch"))}))
"""


def test_an_analytic_dpm_repo_ships_its_scheduler_with_the_file_it_builds_on(hub, tmp_path, cache):
    from ddpm_from_scratch import AnalyticDPMScheduler
    from ddpm_from_scratch.schedulers import scheduling_analytic_dpm

    pipe = tiny_pipeline()
    pipe = DDPMFromScratchPipeline(unet=pipe.unet, scheduler=AnalyticDPMScheduler(
        gamma=[0.1 + 0.04 * t for t in range(20)], num_train_timesteps=20))
    push_pipeline_folder(training_output(tmp_path / "run", pipe), "tester/analytic", token=hub.token)
    files = hub.files("tester/analytic")
    assert files["scheduler/scheduling_analytic_dpm.py"] == Path(scheduling_analytic_dpm.__file__).read_bytes()
    assert files["scheduler/scheduling_ddpm.py"] == Path(scheduling_ddpm.__file__).read_bytes()

    result = subprocess.run([sys.executable, "-c", ANALYTIC_REMOTE_SCRIPT, str(tmp_path / "remote.pt")],
                            env=subprocess_env(hub, tmp_path / "home"), cwd=tmp_path, capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report == {"scheduler": "diffusers_modules.local.scheduling_analytic_dpm.AnalyticDPMScheduler",
                      "modules": []}
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), samples(pipe), atol=1e-6, rtol=0)
    again = DDPMFromScratchPipeline.from_pretrained("tester/analytic", cache_dir=cache)
    assert type(again.scheduler) is AnalyticDPMScheduler
