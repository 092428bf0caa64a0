"""Class-conditional DDPM with classifier-free guidance (issue 20): the U-Net's class embedding (as UNet2DModel's),
the pipeline's `class_labels` / `guidance_scale`, the bound given the label, and every refusal."""

import json
import subprocess
import sys

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.data.labels import drop_class_labels
from ddpm_from_scratch.likelihood import variational_bound
from ddpm_from_scratch.pipelines.guidance import guided_output
from test_hub import subprocess_env
from test_self_contained_pipelines import WITHOUT_THE_PACKAGE_LOADS

T = 20
CLASSES = 4
NAMES = {0: "zero", 1: "one", 2: "two", 3: "three"}


def conditional_unet(out_channels: int = 1, seed: int = 0) -> DDPMFromScratchUNet:
    torch.manual_seed(seed)
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=out_channels, base_channels=8,
                               channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,),
                               norm_num_groups=4, dropout=0.0, num_class_embeds=CLASSES + 1).eval()
    with torch.no_grad():  # an embedding far from zero, so the label visibly matters
        unet.class_embedding.weight.normal_(0, 1)
    return unet


def pipeline(variance_type: str = "fixed_small", id2label=NAMES) -> DDPMFromScratchPipeline:
    out_channels = 2 if variance_type == "learned_range" else 1
    pipe = DDPMFromScratchPipeline(conditional_unet(out_channels),
                                   DDPMFromScratchScheduler(num_train_timesteps=T, variance_type=variance_type),
                                   id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe, **kwargs) -> torch.Tensor:
    kwargs = {"batch_size": 3, "num_inference_steps": 5, **kwargs}
    return pipe(generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images


# ---------------------------------------------------------------------------------------------------- the U-Net


def test_a_conditional_unet_computes_what_unet2d_computes_with_the_labels():
    ours = conditional_unet()
    theirs = ours.to_unet2d().eval()
    assert theirs.config.num_class_embeds == CLASSES + 1
    x, t, c = torch.randn(4, 1, 8, 8), torch.tensor([0, 5, 10, 19]), torch.tensor([0, 1, 3, 4])
    torch.testing.assert_close(ours(x, t, c).sample, theirs(x, t, c).sample, rtol=0, atol=1e-5)


def test_a_conditional_unet2d_from_diffusers_converts_in_with_its_class_embedding():
    torch.manual_seed(1)
    theirs = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                         norm_num_groups=4, num_class_embeds=CLASSES + 1).eval()
    ours = DDPMFromScratchUNet.from_unet2d(theirs)
    x, t, c = torch.randn(3, 1, 8, 8), torch.tensor([1, 7, 15]), torch.tensor([2, 0, 4])
    torch.testing.assert_close(ours(x, t, c).sample, theirs(x, t, c).sample, rtol=0, atol=1e-5)


def test_the_label_changes_the_prediction_and_no_label_is_the_null_label():
    unet = conditional_unet()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 3])
    null = torch.full((2,), CLASSES)
    assert not torch.allclose(unet(x, t, torch.tensor([0, 0])).sample, unet(x, t, torch.tensor([1, 1])).sample)
    assert torch.equal(unet(x, t).sample, unet(x, t, null).sample)
    assert unet.null_class_label == CLASSES


def test_the_presets_stay_unconditional():
    assert DDPMFromScratchUNet.from_preset("digits").class_embedding is None


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([0, CLASSES + 1]), r"class label 5 is outside \[0, num_class_embeds=5\)"),
    (torch.tensor([-1, 0]), r"class label -1 is outside"),
    (torch.tensor([0.0, 1.0]), "class_labels must be integers"),
    (torch.tensor([0, 1, 2]), "class_labels has 3 labels for a batch of 2"),
])
def test_bad_labels_are_refused_by_the_unet(labels, message):
    with pytest.raises(ValueError, match=message):
        conditional_unet()(torch.randn(2, 1, 8, 8), 3, labels)


def test_labels_given_to_an_unconditional_unet_are_refused():
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8,
                               channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,), norm_num_groups=4)
    with pytest.raises(ValueError, match="class_labels given to an unconditional network"):
        unet(torch.randn(1, 1, 8, 8), 3, torch.tensor([0]))


def test_num_class_embeds_needs_a_class_and_the_null_label():
    with pytest.raises(ValueError, match="num_class_embeds must be an integer ≥ 2"):
        DDPMFromScratchUNet(num_class_embeds=1)


# ---------------------------------------------------------------------------------------------------- guidance


def test_guidance_mixes_epsilon_and_keeps_the_conditional_branchs_variance():
    conditional, unconditional = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    guided = guided_output(conditional, unconditional, 3.0, channels=1)
    torch.testing.assert_close(guided[:, :1], unconditional[:, :1] + 3.0 * (conditional[:, :1] - unconditional[:, :1]))
    assert torch.equal(guided[:, 1:], conditional[:, 1:])


class ReferenceSampler:
    """The guided reverse chain written out with two separate network calls per step: an independent answer."""

    def __init__(self, pipe, scheduler):
        self.pipe, self.scheduler = pipe, scheduler

    def __call__(self, labels, scale, steps=5):
        unet, scheduler = self.pipe.unet, self.scheduler
        generator = torch.Generator().manual_seed(0)
        sample = torch.randn((len(labels), 1, 8, 8), generator=generator) * scheduler.init_noise_sigma
        scheduler.set_timesteps(steps)
        c, null = torch.tensor(labels), torch.full((len(labels),), CLASSES)
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(sample, t)
            with torch.no_grad():
                eps_c, eps_u = unet(x, t, c).sample, unet(x, t, null).sample
            eps = eps_u[:, :1] + scale * (eps_c[:, :1] - eps_u[:, :1])
            if isinstance(scheduler, DDPMFromScratchScheduler) and scheduler.config.variance_type == "learned_range":
                eps = torch.cat([eps, eps_c[:, 1:]], dim=1)
            sample = scheduler.step(eps, t, sample, generator=generator).prev_sample
        return (sample / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("scheduler_class", [DDPMFromScratchScheduler, DDIMScheduler, DPMSolverMultistepScheduler])
@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_the_guided_pipeline_samples_the_guided_chain_with_every_scheduler(scheduler_class, variance_type):
    pipe = pipeline(variance_type)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    labels = [0, 2, 3]
    # A generator list draws per image: one generator for the reference means the same draws only for one image.
    for i, label in enumerate(labels):
        got = pipe(class_labels=[label], guidance_scale=2.5, num_inference_steps=5, output_type="pt",
                   generator=torch.Generator().manual_seed(0)).images
        want = ReferenceSampler(pipe, scheduler_class.from_config(pipe.scheduler.config))([label], 2.5)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=f"label {label}")


def test_both_branches_run_in_one_batched_network_call_per_step():
    pipe = pipeline()
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, kwargs_out: calls.append(args[0].shape[0]))
    draw(pipe, class_labels=[0, 1, 2], guidance_scale=3.0)
    assert calls == [6] * 5


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    pipe = pipeline()
    conditional = draw(pipe, class_labels=[1, 1, 1])
    torch.testing.assert_close(conditional, draw(pipe, class_labels=1, guidance_scale=1.0), rtol=0, atol=0)
    torch.testing.assert_close(draw(pipe, class_labels=[1, 2, 3], guidance_scale=0.0), draw(pipe),
                               rtol=0, atol=1e-5)
    assert not torch.allclose(conditional, draw(pipe), atol=1e-3)


def test_labels_may_be_names_from_id2label_and_survive_saving(tmp_path):
    pipe = pipeline()
    by_name = draw(pipe, class_labels=["two", "three", "zero"], guidance_scale=2.0)
    torch.testing.assert_close(by_name, draw(pipe, class_labels=[2, 3, 0], guidance_scale=2.0), rtol=0, atol=0)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.id2label == NAMES and loaded.num_classes == CLASSES
    torch.testing.assert_close(draw(loaded, class_labels=["two", "three", "zero"], guidance_scale=2.0), by_name,
                               rtol=0, atol=0)


def test_a_list_of_labels_sets_the_batch_size():
    assert draw(pipeline(), batch_size=1, class_labels=[0, 1, 2, 3]).shape[0] == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(class_labels=CLASSES), r"`class_labels`: 4 is outside \[0, 4\)"),
    (dict(class_labels="seven"), r"'seven' is not a class name of this model \(known: zero, one, two, three\)"),
    (dict(class_labels=[0, 1]), "`class_labels` has 2 labels but `batch_size` is 3"),
    (dict(class_labels=[0, 1.5, 2]), "1.5 is neither a class index nor a class name"),
    (dict(class_labels=1, guidance_scale=-1.0), "`guidance_scale` must be a finite number ≥ 0, got -1.0"),
    (dict(class_labels=1, guidance_scale=float("nan")), "`guidance_scale` must be a finite number"),
])
def test_bad_conditioning_is_refused_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        draw(pipeline(), **kwargs)


def test_an_unconditional_pipeline_refuses_labels_and_guidance():
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8,
                               channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,), norm_num_groups=4)
    pipe = DDPMFromScratchPipeline(unet, DDPMFromScratchScheduler(num_train_timesteps=T))
    with pytest.raises(ValueError, match="`class_labels` given to an unconditional model"):
        draw(pipe, class_labels=1)
    with pytest.raises(ValueError, match="`guidance_scale`=2.0 needs a class-conditional model"):
        draw(pipe, guidance_scale=2.0)


def test_to_diffusers_refuses_a_conditional_pipeline_rather_than_dropping_the_labels():
    with pytest.raises(ValueError, match="DDPMPipeline takes no class labels.*to_unet2d"):
        pipeline().to_diffusers()


# ---------------------------------------------------------------------------------------------------- the bound


def test_the_bound_given_the_label_is_the_bound_of_the_network_fixed_to_that_label():
    pipe = pipeline("learned_range")
    images = torch.randint(0, 256, (2, 1, 8, 8), generator=torch.Generator().manual_seed(3)).float() / 127.5 - 1
    labels = torch.tensor([1, 3])

    def fixed_to_labels(sample, timesteps):  # row j·B + i of a chunk is image i
        return pipe.unet(sample, timesteps, labels.repeat(sample.shape[0] // 2))

    got = pipe.variational_bound(images, torch.Generator().manual_seed(5), class_labels=["one", "three"],
                                 progress=False)
    want = variational_bound(fixed_to_labels, pipe.scheduler, images, torch.Generator().manual_seed(5),
                             progress=False)
    torch.testing.assert_close(got.bits_per_dim, want.bits_per_dim, rtol=0, atol=0)
    unconditional = pipe.variational_bound(images, torch.Generator().manual_seed(5), progress=False)
    assert not torch.allclose(got.bits_per_dim, unconditional.bits_per_dim)


# ---------------------------------------------------------------------------------------------------- training


def test_label_dropout_replaces_labels_by_the_null_label_with_the_given_probability():
    labels = torch.zeros(20_000, dtype=torch.long)
    dropped = drop_class_labels(labels, null_label=10, probability=0.1, generator=torch.Generator().manual_seed(0))
    fraction = (dropped == 10).float().mean().item()
    assert set(dropped.unique().tolist()) == {0, 10}
    assert abs(fraction - 0.1) < 5 * (0.1 * 0.9 / 20_000) ** 0.5
    assert torch.equal(drop_class_labels(labels, 10, 0.0, torch.Generator().manual_seed(0)), labels)


# ---------------------------------------------------------------------------------------------------- the Hub


@pytest.mark.parametrize("source", ["folder", "hub"])
def test_a_conditional_pipeline_loads_with_diffusers_alone_and_samples_the_same(source, hub, tmp_path):
    pipe = pipeline("learned_range")
    call = dict(batch_size=2, num_inference_steps=5, output_type="pt", class_labels=["one", 3], guidance_scale=2.0)
    expected = pipe(generator=torch.Generator().manual_seed(0), **call).images
    pipe.save_pretrained(tmp_path / "pipe")
    where = str(tmp_path / "pipe")
    if source == "hub":
        pipe.push_to_hub("tester/conditional", token=hub.token)
        where = "tester/conditional"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_PACKAGE_LOADS, "DDPMFromScratchPipeline", where,
         str(tmp_path / "samples.pt"), json.dumps(call)],
        env=subprocess_env(hub, tmp_path / "home"), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.split("REPORT", 1)[1])["modules"] == []
    torch.testing.assert_close(torch.load(tmp_path / "samples.pt"), expected, rtol=0, atol=1e-6)
