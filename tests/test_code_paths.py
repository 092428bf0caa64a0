"""One code path per quantity keeps the bits: the merged x̂_0, U-Net name mapping, pipelines and bound give exactly
what the separate paths gave (issue 19, item 5).

The expected values are tests/fixtures/code_paths.safetensors, written by tests/fixtures/make_code_path_outputs.py
with the code before the merges, inputs and weights included. Tolerance: none, except where the U-Net runs: its
float32 convolution and matmul kernels round differently from one CPU to another (AVX2 vs AVX-512 builds of oneDNN
and MKL: up to 4 ulps per sample value, 1e-6 relative on the bound's terms), so those results are held to 1e-5
relative — far below what any change of formula or code path moves, far above the machines' rounding.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddpm_from_scratch import (
    BinomialDiffusionPipeline,
    BinomialDiffusionScheduler,
    DDPMFromScratchPipeline,
    DDPMFromScratchScheduler,
    DDPMFromScratchUNet,
    PointDiffusionPipeline,
    ToyDenoiser,
)
from ddpm_from_scratch.likelihood import variational_bound

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MAKER = FIXTURES / "make_code_path_outputs.py"


@pytest.fixture(scope="module")
def recorded() -> dict:
    return load_file(FIXTURES / "code_paths.safetensors")


@pytest.fixture(scope="module")
def maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_code_path_outputs", MAKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weights(recorded: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in recorded.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def unet(recorded, maker) -> DDPMFromScratchUNet:
    model = DDPMFromScratchUNet(**maker.TINY_UNET).eval()
    model.load_state_dict(weights(recorded, "unet/weights/"))
    return model


def exactly(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.dtype == want.dtype and torch.equal(got, want)


# The CPUs' rounding of the U-Net's float32 kernels, amplified at most 10× by the steps after it (see the docstring).
UNET_RTOL, UNET_ATOL = 1e-5, 1e-6


def as_before_through_the_unet(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=UNET_RTOL, atol=UNET_ATOL)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("chain", ["training", "respaced"])
def test_x0_from_the_model_output_is_the_same_in_step_and_predict_start(recorded, maker, prediction_type,
                                                                          dtype_name, chain):
    dtype = maker.DTYPES[dtype_name]
    sample, output = recorded["x0/sample"].to(dtype), recorded["x0/model_output"].to(dtype)
    scheduler = DDPMFromScratchScheduler(prediction_type=prediction_type)
    if chain == "respaced":
        scheduler.set_timesteps(50)
    key = f"x0/{prediction_type}/{dtype_name}/{chain}"
    timesteps = maker.TIMESTEPS if chain == "training" else [int(t) for t in scheduler.timesteps[::12]]
    for t in timesteps:
        step = scheduler.step(output, t, sample, generator=torch.Generator().manual_seed(t))
        assert exactly(step.pred_original_sample, recorded[f"{key}/{t}/step_x0"]), t
        assert exactly(step.prev_sample, recorded[f"{key}/{t}/step_prev"]), t
        assert exactly(scheduler.predict_start(output, sample, torch.tensor([t, t])),
                       recorded[f"{key}/{t}/predict_start"]), t


def test_the_unet_maps_to_and_from_diffusers_names_as_before(recorded, maker, unet):
    theirs = unet.to_unet2d()
    assert torch.equal(maker.state_dict_digest(theirs.state_dict()), recorded["unet/to_unet2d_sha256"])
    back = DDPMFromScratchUNet.from_unet2d(theirs).state_dict()
    assert torch.equal(maker.state_dict_digest(back), recorded["unet/from_unet2d_sha256"])


@pytest.mark.parametrize("variance_type", ["learned_range", "fixed_small"])
def test_the_ddpm_pipeline_samples_as_before(recorded, unet, variance_type):
    pipe = DDPMFromScratchPipeline(unet=unet, scheduler=DDPMFromScratchScheduler(variance_type=variance_type))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=20, generator=torch.Generator().manual_seed(1),
                  output_type="pt").images
    as_before_through_the_unet(images, recorded[f"pipeline/ddpm/{variance_type}"])


def test_the_binomial_pipeline_samples_as_before(recorded):
    model = ToyDenoiser(in_features=6, hidden_size=16, num_blocks=1).eval()
    model.load_state_dict(weights(recorded, "toy/binomial/weights/"))
    pipe = BinomialDiffusionPipeline(unet=model, scheduler=BinomialDiffusionScheduler(num_train_timesteps=20))
    pipe.set_progress_bar_config(disable=True)
    samples = pipe(batch_size=3, generator=torch.Generator().manual_seed(2), output_type="pt").samples
    assert exactly(samples, recorded["pipeline/binomial"])


def test_the_point_pipeline_samples_as_before(recorded):
    model = ToyDenoiser(in_features=2, out_features=4, hidden_size=16, num_blocks=1).eval()
    model.load_state_dict(weights(recorded, "toy/point/weights/"))
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=10, variance_type="learned_range", clip_sample=False)
    pipe = PointDiffusionPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    samples = pipe(batch_size=3, generator=torch.Generator().manual_seed(3), output_type="pt").samples
    assert exactly(samples, recorded["pipeline/point"])


@pytest.mark.parametrize("variance_type", ["learned_range", "fixed_small"])
@pytest.mark.parametrize("steps", [None, 10])
def test_the_image_bound_is_as_before(recorded, unet, variance_type, steps):
    scheduler = DDPMFromScratchScheduler(variance_type=variance_type)
    bound = variational_bound(unet, scheduler, recorded["bound/images"], torch.Generator().manual_seed(5),
                              batch_timesteps=100, progress=False, num_inference_steps=steps)
    key = f"bound/{variance_type}/{steps or 'all'}"
    as_before_through_the_unet(bound.terms_bits_per_dim, recorded[f"{key}/terms"])
    assert exactly(bound.prior_bits_per_dim, recorded[f"{key}/prior"])
    as_before_through_the_unet(bound.decoder_bits_per_dim, recorded[f"{key}/decoder"])
