"""Specification of DDPMFromScratchUNet, the DDPM ε_θ(x_t, t) network.

Expected values come from outside the module under test: diffusers' UNet2DModel built
from a DDPM-layout config (outputs and parameter counts), the closed form of the
sinusoidal embedding, and the definition of dropout.
"""

import copy
import math

import pytest
import torch
import torch.utils.checkpoint
from diffusers import UNet2DModel

from ddpm_from_scratch.models.unet import (
    PRESETS,
    DDPMFromScratchUNet,
    DDPMFromScratchUNetOutput,
    Dropout,
    fourier_features,
    sinusoidal_embedding,
)

# The config of the converted google/ddpm-cifar10-32 checkpoint (its UNet2DModel layout).
GOOGLE_DDPM_CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    attention_head_dim=None,
    time_embedding_type="positional",
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
    norm_eps=1e-6,
    norm_num_groups=32,
    act_fn="silu",
    center_input_sample=False,
    mid_block_scale_factor=1,
    resnet_time_scale_shift="default",
)

# A tiny UNet2DModel in the same layout: attention at level 1 and in the middle.
TINY_UNET2D = dict(
    GOOGLE_DDPM_CIFAR10,
    sample_size=8,
    in_channels=2,
    out_channels=3,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
)

# Small configs of ours, for everything that does not need a full-size network.
TINY = dict(
    sample_size=8,
    in_channels=2,
    out_channels=3,
    base_channels=16,
    channel_multipliers=(1, 2),
    num_res_blocks=1,
    attention_levels=(1,),
    attention_heads=1,
    dropout=0.1,
    norm_num_groups=8,
    norm_eps=1e-6,
)
THREE_LEVELS = dict(
    TINY, sample_size=16, channel_multipliers=(1, 2, 4), num_res_blocks=2, attention_levels=(0, 2), dropout=0.0
)

TOLERANCE = 1e-4  # float32, outputs of magnitude ~0.1–1


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Overwrite every parameter with small random values, so that no zero-initialised
    or identity-initialised layer can hide a wiring mistake."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return model


def inputs(config, batch: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    size = config["sample_size"]
    x = torch.randn(batch, config["in_channels"], size, size, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    return x, t


def public(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_same_outputs(ours, theirs, x, timesteps):
    for t in timesteps:
        with torch.no_grad():
            a = ours(x, t).sample
            b = theirs(x, t).sample
        assert a.shape == b.shape == (x.shape[0], ours.config.out_channels, *x.shape[2:])
        assert b.abs().max() > 1e-2  # a comparison of non-trivial outputs
        assert (a - b).abs().max().item() < TOLERANCE, f"timestep {t!r}"


def timesteps_for(batch: int):
    """A Python int, a 0-d tensor and a (B,) tensor of distinct timesteps."""
    return [0, torch.tensor(999), torch.linspace(1, 998, batch).long()]


# ------------------------------------------------------------------ timestep embedding


def test_sinusoidal_embedding_matches_closed_form():
    model = DDPMFromScratchUNet(**TINY)
    t = torch.tensor([0.0, 1.0, 17.0, 250.5, 999.0])
    d = TINY["base_channels"]
    half = d // 2
    expected = torch.tensor(
        [
            [math.sin(ti * 10000 ** (-i / (half - 1))) for i in range(half)]
            + [math.cos(ti * 10000 ** (-i / (half - 1))) for i in range(half)]
            for ti in t.tolist()
        ],
        dtype=torch.float64,
    )
    got = sinusoidal_embedding(t, model.time_embedding.frequencies)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-4)


def test_frequencies_stay_float32_when_the_model_is_cast():
    model = DDPMFromScratchUNet(**TINY)
    reference = model.time_embedding.frequencies.clone()
    model.to(torch.bfloat16)
    assert model.conv_in.weight.dtype == torch.bfloat16
    assert model.time_embedding.frequencies.dtype == torch.float32
    assert torch.equal(model.time_embedding.frequencies, reference)


def test_frequencies_are_not_saved_in_the_state_dict():
    model = DDPMFromScratchUNet(**TINY)
    assert not any("frequencies" in k for k in model.state_dict())


# ------------------------------------------------------------------------------- forward


def test_forward_returns_an_output_dataclass_of_the_input_shape():
    model = DDPMFromScratchUNet(**TINY).eval()
    x, t = inputs(TINY, batch=3)
    out = model(x, t)
    assert isinstance(out, DDPMFromScratchUNetOutput)
    assert out.sample.shape == (3, TINY["out_channels"], 8, 8)


def test_return_dict_false_returns_a_tuple():
    model = DDPMFromScratchUNet(**TINY).eval()
    x, t = inputs(TINY, batch=2)
    out = model(x, t, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1
    assert torch.equal(out[0], model(x, t).sample)


def test_a_single_timestep_in_any_form_is_shared_by_the_batch():
    model = perturb_(DDPMFromScratchUNet(**TINY)).eval()
    x, _ = inputs(TINY, batch=3)
    with torch.no_grad():
        reference = model(x, torch.full((3,), 42)).sample
        for t in (42, 42.0, torch.tensor(42), torch.tensor([42]), torch.tensor(42.0)):
            assert torch.allclose(model(x, t).sample, reference, atol=1e-6), repr(t)


def test_a_batch_of_timesteps_applies_one_per_sample():
    model = perturb_(DDPMFromScratchUNet(**TINY)).eval()
    x, _ = inputs(TINY, batch=3)
    t = torch.tensor([5, 500, 995])
    with torch.no_grad():
        together = model(x, t).sample
        one_by_one = torch.cat([model(x[i : i + 1], int(t[i])).sample for i in range(3)])
    assert torch.allclose(together, one_by_one, atol=1e-5)


def test_fractional_timesteps_are_not_rounded():
    model = perturb_(DDPMFromScratchUNet(**TINY)).eval()
    x, _ = inputs(TINY, batch=1)
    with torch.no_grad():
        assert not torch.allclose(model(x, 10.5).sample, model(x, 10).sample)
        assert torch.allclose(model(x, 10.5).sample, model(x, torch.tensor([10.5])).sample)


def test_timesteps_of_the_wrong_length_are_refused():
    model = DDPMFromScratchUNet(**TINY)
    x, _ = inputs(TINY, batch=3)
    with pytest.raises(ValueError, match="timestep"):
        model(x, torch.tensor([1, 2]))


def test_dropout_acts_only_in_training():
    model = perturb_(DDPMFromScratchUNet(**TINY))
    x, t = inputs(TINY, batch=2)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x, t).sample, model(x, t).sample)
        model.train()
        assert not torch.equal(model(x, t).sample, model(x, t).sample)


def test_dropout_zeroes_a_fraction_p_and_rescales_the_rest():
    p = 0.1
    dropout = Dropout(p).train()
    x = torch.ones(1_000_000)
    y = dropout(x)
    kept = y != 0
    assert abs((~kept).float().mean().item() - p) < 3e-3  # ~10 standard deviations
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))


# ------------------------------------------------------------------- config and presets


def test_config_registers_every_constructor_argument():
    model = DDPMFromScratchUNet(**TINY)
    # The diffusers-layout options default to the DDPM paper's layout.
    ddpm_layout = {"attention_head_dim": None, "flip_sin_to_cos": False, "freq_shift": 1.0, "downsample_padding": 0,
                   "fourier_feature_exponents": (), "num_class_embeds": None}
    assert public(model.config) == {**TINY, **ddpm_layout}


def test_unknown_preset_error_lists_the_available_names():
    with pytest.raises(ValueError) as error:
        DDPMFromScratchUNet.from_preset("imagenet")
    for name in PRESETS:
        assert name in str(error.value)


def test_preset_overrides_replace_single_fields():
    model = DDPMFromScratchUNet.from_preset("digits", dropout=0.0, attention_heads=2)
    assert model.config.dropout == 0.0
    assert model.config.attention_heads == 2
    assert model.config.base_channels == PRESETS["digits"]["base_channels"]


def test_digits_preset_is_small():
    model = DDPMFromScratchUNet.from_preset("digits")
    assert model.config.sample_size == 8 and model.config.in_channels == 1
    assert 1_000_000 <= n_params(model) <= 3_000_000


def test_invalid_attention_level_is_refused():
    with pytest.raises(ValueError, match="attention_levels"):
        DDPMFromScratchUNet(**dict(TINY, attention_levels=(2,)))


def test_heads_that_do_not_divide_the_channels_are_refused():
    with pytest.raises(ValueError, match="attention_heads"):
        DDPMFromScratchUNet(**dict(TINY, attention_heads=3))


# -------------------------------------------------------------- UNet2DModel equivalence


@pytest.fixture(scope="module")
def google_cifar10_unet():
    """UNet2DModel in the google/ddpm-cifar10-32 layout, random weights (built once)."""
    return perturb_(UNet2DModel(**GOOGLE_DDPM_CIFAR10), seed=3).eval()


def test_ddpm_cifar10_preset_has_the_paper_size(google_cifar10_unet):
    model = DDPMFromScratchUNet.from_preset("ddpm-cifar10")
    assert n_params(model) == n_params(google_cifar10_unet) == 35_746_307


def test_google_ddpm_cifar10_converts_to_the_preset_and_agrees(google_cifar10_unet):
    ours = DDPMFromScratchUNet.from_unet2d(google_cifar10_unet)
    ddpm_layout = {"attention_head_dim": None, "flip_sin_to_cos": False, "freq_shift": 1.0, "downsample_padding": 0,
                   "fourier_feature_exponents": (), "num_class_embeds": None}
    # the hub config has no dropout
    assert public(ours.config) == dict(PRESETS["ddpm-cifar10"], dropout=0.0, **ddpm_layout)
    x, _ = inputs(GOOGLE_DDPM_CIFAR10, batch=1)
    assert_same_outputs(ours, google_cifar10_unet, x, [0, torch.tensor(999), torch.tensor([500])])


EQUIVALENCE_CASES = {
    **{name: (config, 1 if config["sample_size"] > 16 else 3) for name, config in PRESETS.items()},
    "multi-head": (dict(PRESETS["digits"], attention_heads=4), 3),
    "three-levels": (THREE_LEVELS, 2),
}


@pytest.mark.parametrize("case", sorted(EQUIVALENCE_CASES))
def test_to_unet2d_computes_the_same_function(case):
    config, batch = EQUIVALENCE_CASES[case]
    ours = perturb_(DDPMFromScratchUNet(**config), seed=5).eval()
    theirs = ours.to_unet2d().eval()
    assert isinstance(theirs, UNet2DModel)
    assert n_params(theirs) == n_params(ours)
    x, _ = inputs(config, batch)
    assert_same_outputs(ours, theirs, x, timesteps_for(batch))


UNET2D_CASES = {
    "tiny": TINY_UNET2D,
    "multi-head": dict(TINY_UNET2D, attention_head_dim=8),  # 4 heads in every attention block
    "attention-everywhere": dict(
        TINY_UNET2D,
        block_out_channels=(16, 32, 32),
        down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"),
        layers_per_block=2,
    ),
}


@pytest.mark.parametrize("case", sorted(UNET2D_CASES))
def test_from_unet2d_computes_the_same_function(case):
    theirs = perturb_(UNet2DModel(**UNET2D_CASES[case]), seed=7).eval()
    ours = DDPMFromScratchUNet.from_unet2d(theirs).eval()
    x, _ = inputs(UNET2D_CASES[case], batch=3)
    assert_same_outputs(ours, theirs, x, timesteps_for(3))


def test_from_unet2d_keeps_dropout_and_training_mode():
    theirs = UNet2DModel(**dict(TINY_UNET2D, dropout=0.25)).train()
    ours = DDPMFromScratchUNet.from_unet2d(theirs)
    assert ours.config.dropout == 0.25
    assert ours.training


def test_round_trip_through_unet2d_keeps_weights_bit_identical():
    ours = perturb_(DDPMFromScratchUNet(**THREE_LEVELS), seed=9)
    back = DDPMFromScratchUNet.from_unet2d(ours.to_unet2d())
    assert public(back.config) == public(ours.config)
    theirs_state, back_state = ours.state_dict(), back.state_dict()
    assert theirs_state.keys() == back_state.keys()
    for key, value in theirs_state.items():
        assert torch.equal(value, back_state[key]), key


REFUSED = [
    # (UNet2DModel overrides, the option the error must name)
    (dict(time_embedding_type="fourier"), "time_embedding_type"),
    (dict(time_embedding_dim=100), "time_embedding_dim"),
    (dict(center_input_sample=True), "center_input_sample"),
    (dict(class_embed_type="timestep"), "class_embed_type"),
    (dict(num_class_embeds=1), "num_class_embeds"),
    (dict(act_fn="mish"), "act_fn"),
    (dict(resnet_time_scale_shift="scale_shift"), "resnet_time_scale_shift"),
    (dict(downsample_type="resnet"), "downsample_type"),
    (dict(upsample_type="resnet"), "upsample_type"),
    (dict(mid_block_type=None), "mid_block_type"),
    (dict(mid_block_scale_factor=2.0), "mid_block_scale_factor"),
    (dict(add_attention=False), "add_attention"),
    (dict(attn_norm_num_groups=4), "attn_norm_num_groups"),
    (dict(block_out_channels=(16, 24)), "block_out_channels"),
    (dict(down_block_types=("DownBlock2D", "ResnetDownsampleBlock2D")), "down_block_types"),
    (dict(up_block_types=("UpBlock2D", "AttnUpBlock2D")), "up_block_types"),  # attention at the wrong level
    (dict(attention_head_dim=12), "attention_head_dim"),  # does not divide 32 channels
    (dict(downsample_padding=2), "downsample_padding"),
]


@pytest.mark.parametrize("overrides, option", REFUSED, ids=[f"{o}" for _, o in REFUSED])
def test_from_unet2d_refuses_what_it_cannot_represent(overrides, option):
    unet = UNet2DModel(**{**TINY_UNET2D, **overrides})
    value = unet.config[option]
    with pytest.raises(ValueError) as error:
        DDPMFromScratchUNet.from_unet2d(unet)
    message = str(error.value)
    assert option in message
    assert repr(tuple(value) if isinstance(value, list) else value) in message


def test_from_unet2d_refuses_other_models():
    with pytest.raises(TypeError):
        DDPMFromScratchUNet.from_unet2d(torch.nn.Linear(2, 2))


def test_to_unet2d_refuses_heads_of_different_widths():
    # 2 heads over a 16-channel block (8 wide) and over the 32-channel middle (16 wide):
    # UNet2DModel has a single attention_head_dim.
    model = DDPMFromScratchUNet(**dict(TINY, attention_levels=(0,), attention_heads=2))
    with pytest.raises(ValueError, match="attention_heads"):
        model.to_unet2d()


# ------------------------------------------------------------------ training machinery


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    calls = []

    def counting_checkpoint(module, *args):
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    plain = perturb_(DDPMFromScratchUNet(**TINY), seed=11).train()  # dropout 0.1 on
    checkpointed = copy.deepcopy(plain)
    checkpointed.enable_gradient_checkpointing(gradient_checkpointing_func=counting_checkpoint)
    assert checkpointed.gradient_checkpointing
    x, t = inputs(TINY, batch=2)

    def run(model):
        torch.manual_seed(0)  # same dropout masks
        out = model(x, t).sample
        out.square().mean().backward()
        return out.detach(), {name: p.grad for name, p in model.named_parameters()}

    out_plain, grads_plain = run(plain)
    out_ckpt, grads_ckpt = run(checkpointed)
    assert "ResidualBlock" in calls and "AttentionBlock" in calls
    assert torch.allclose(out_plain, out_ckpt, atol=1e-6)
    for name, grad in grads_plain.items():
        assert torch.allclose(grad, grads_ckpt[name], atol=1e-6, rtol=1e-5), name


def test_save_and_load_round_trip_is_bit_identical(tmp_path):
    model = perturb_(DDPMFromScratchUNet(**THREE_LEVELS), seed=13).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "config.json").is_file()

    loaded = DDPMFromScratchUNet.from_pretrained(tmp_path).eval()
    assert public(loaded.config) == public(model.config)
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for key, value in saved_state.items():
        assert torch.equal(value, loaded_state[key]), key
    x, t = inputs(THREE_LEVELS, batch=2)
    with torch.no_grad():
        assert torch.equal(loaded(x, t).sample, model(x, t).sample)


@pytest.mark.parametrize("base", ["digits", "ddpm-cifar10"])
def test_learned_variance_presets_differ_from_their_base_only_in_doubled_outputs(base):
    variant = PRESETS[f"{base}-learned-variance"]
    assert variant["out_channels"] == 2 * variant["in_channels"]
    assert {k: v for k, v in variant.items() if k != "out_channels"} == {
        k: v for k, v in PRESETS[base].items() if k != "out_channels"}


def test_learns_variance_reads_the_output_channels():
    assert DDPMFromScratchUNet.from_config({**TINY, "in_channels": 2, "out_channels": 4}).learns_variance
    assert not DDPMFromScratchUNet.from_config({**TINY, "in_channels": 2, "out_channels": 2}).learns_variance


def test_a_learned_variance_unet_converts_to_unet2d_and_back_exactly():
    ours = perturb_(DDPMFromScratchUNet(**{**TINY, "in_channels": 1, "out_channels": 2, "dropout": 0.0})).eval()
    theirs = ours.to_unet2d().eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 400, 999])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x, t).sample, ours(x, t).sample, atol=1e-5, rtol=0)
    back = DDPMFromScratchUNet.from_unet2d(theirs)
    assert back.learns_variance
    ours_state, back_state = ours.state_dict(), back.state_dict()
    assert ours_state.keys() == back_state.keys()
    for key, value in ours_state.items():
        assert torch.equal(value, back_state[key]), key


# Layouts of UNet2DModels people train with diffusers, at small widths (same options, fewer channels).
DIFFUSERS_LAYOUTS = {
    # UNet2DModel() defaults: cosines first, freq_shift 0, symmetric down-sampling padding, 8-wide heads
    # (so 4, 8 and 12 heads at the attention levels), norm_eps 1e-5.
    "UNet2DModel-defaults": dict(sample_size=16, block_out_channels=(32, 64, 96, 128), norm_num_groups=8),
    # diffusers' examples/unconditional_image_generation/train_unconditional.py: 6 levels, attention at the 5th.
    "train_unconditional": dict(
        sample_size=32, layers_per_block=2, block_out_channels=(16, 16, 32, 32, 64, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                          "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    ),
    # google/ddpm-cifar10-32: the DDPM paper's layout.
    "ddpm-cifar10-32": dict(
        sample_size=16, block_out_channels=(32, 64, 64, 64), norm_num_groups=8, norm_eps=1e-6,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, attention_head_dim=None,
    ),
}


@pytest.mark.parametrize("layout", list(DIFFUSERS_LAYOUTS))
def test_diffusers_layouts_convert_with_the_same_outputs_both_ways(layout):
    torch.manual_seed(0)
    theirs = UNet2DModel(in_channels=3, out_channels=3, **DIFFUSERS_LAYOUTS[layout]).eval()
    size = theirs.config.sample_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 917])
    with torch.no_grad():
        want = theirs(x, t).sample
        ours = DDPMFromScratchUNet.from_unet2d(theirs).eval()
        torch.testing.assert_close(ours(x, t).sample, want, rtol=1e-5, atol=1e-5)
        back = ours.to_unet2d().eval()
        torch.testing.assert_close(back(x, t).sample, want, rtol=1e-5, atol=1e-5)
    assert {k: back.config[k] for k in ("flip_sin_to_cos", "freq_shift", "downsample_padding", "attention_head_dim")} \
        == {k: theirs.config[k] for k in ("flip_sin_to_cos", "freq_shift", "downsample_padding", "attention_head_dim")}


def test_the_default_layouts_attention_heads_follow_the_head_width_per_level():
    ours = DDPMFromScratchUNet.from_unet2d(UNet2DModel(**DIFFUSERS_LAYOUTS["UNet2DModel-defaults"]))
    heads = [block.heads for level in ours.down_levels for block in level.attentions] + [ours.middle.attention.heads]
    assert sorted(set(heads)) == [8, 12, 16]  # 64/8, 96/8, 128/8 (middle 128/8)


def test_fourier_features_append_sines_then_cosines_of_every_exponent():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = fourier_features(x, [4, 7])
    expected = [x]
    for fn in (torch.sin, torch.cos):
        expected += [fn(2.0 ** n * math.pi * x) for n in (4, 7)]
    torch.testing.assert_close(features, torch.cat(expected, dim=1))


def test_fourier_features_of_no_exponents_are_the_input_itself():
    x = torch.randn(2, 1, 8, 8)
    assert fourier_features(x, ()) is x


def test_fourier_features_are_periodic_in_the_grid_they_resolve():
    # n = 4 has period 1/8 in x, the spacing of the digits' 17 levels in [−1, 1]: every level maps to one phase.
    levels = torch.linspace(-1, 1, 17).reshape(1, 1, 1, 17)
    features = fourier_features(levels, [4])
    torch.testing.assert_close(features[:, 1], torch.zeros(1, 1, 17), atol=1e-5, rtol=0)
    torch.testing.assert_close(features[:, 2], torch.ones(1, 1, 17), atol=1e-5, rtol=0)


def test_a_network_with_fourier_features_widens_only_its_first_convolution():
    plain = DDPMFromScratchUNet.from_preset("digits")
    with_features = DDPMFromScratchUNet.from_preset("digits", fourier_feature_exponents=[4, 5, 6])
    assert with_features.conv_in.in_channels == 7 and plain.conv_in.in_channels == 1
    widened = {k for k, v in with_features.state_dict().items() if v.shape != plain.state_dict()[k].shape}
    assert widened == {"conv_in.weight"}


def test_fourier_features_reach_the_prediction():
    # x and x + 2^-4·2 have the same features at n = 4 but different x: a network that ignored the
    # features would need conv_in's x-weights; zero those and only the features can tell x_t apart.
    model = perturb_(DDPMFromScratchUNet.from_preset("digits", fourier_feature_exponents=[6]), seed=2).eval()
    with torch.no_grad():
        model.conv_in.weight[:, 0] = 0
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.5
    with torch.no_grad():
        same_phase = model(x + 2.0 ** -5, 10).sample  # one period of sin(2^6 π x)
        other_phase = model(x + 2.0 ** -7, 10).sample
        reference = model(x, 10).sample
    torch.testing.assert_close(same_phase, reference, atol=1e-4, rtol=0)
    assert (other_phase - reference).abs().max() > 1e-3


def test_fourier_features_survive_save_and_load(tmp_path):
    model = perturb_(DDPMFromScratchUNet.from_preset("digits", fourier_feature_exponents=[4, 8]), seed=5).eval()
    model.save_pretrained(tmp_path)
    loaded = DDPMFromScratchUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.fourier_feature_exponents == (4, 8)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x, 7).sample, model(x, 7).sample)


def test_to_unet2d_refuses_fourier_features_naming_the_option():
    model = DDPMFromScratchUNet.from_preset("digits", fourier_feature_exponents=[4])
    with pytest.raises(ValueError, match=r"fourier_feature_exponents=\[4\].*no UNet2DModel equivalent"):
        model.to_unet2d()
