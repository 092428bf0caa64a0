"""The DDPM noise-prediction network ε_θ(x_t, t) (Ho, Jain & Abbeel 2020, appendix B).

A U-Net: an encoder of residual blocks and stride-2 down-sampling, a middle of
(residual block, self-attention, residual block), and a decoder of residual blocks
and nearest-neighbour up-sampling that mirrors the encoder; every encoder activation
is handed across to the decoder at its resolution (the skip connections). The
timestep t enters every residual block: a sinusoidal embedding of t (as in the
Transformer) goes through a two-layer MLP, and each residual block adds a learned
projection of it to its feature maps. Normalisation is GroupNorm, the
non-linearity SiLU ("swish"), and dropout sits inside each residual block.

The module is self-contained (torch and diffusers only) so it can be shipped
verbatim in a Hub repository and loaded with ``trust_remote_code``.

``DDPMFromScratchUNet`` also converts to and from diffusers' ``UNet2DModel`` in the
DDPM layout (the one of the converted ``google/ddpm-cifar10-32`` checkpoint): same
weights, same outputs up to float rounding.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

__all__ = ["DDPMFromScratchUNet", "DDPMFromScratchUNetOutput", "PRESETS", "sinusoidal_embedding"]


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------

PRESETS: Dict[str, Dict[str, Any]] = {
    # The paper's CIFAR-10 network: 35.7 M parameters.
    "ddpm-cifar10": dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        base_channels=128,
        channel_multipliers=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_levels=(1,),  # level 1 of a 32×32 input is 16×16
        attention_heads=1,
        dropout=0.1,
        norm_num_groups=32,
        norm_eps=1e-6,
    ),
    # A small network for the 8×8 grey-scale UCI digits that trains in minutes on a CPU
    # (1.6 M parameters): two levels, 8×8 and 4×4, both 64 channels wide (doubling the
    # width at 4×4 would cost 2.5× the parameters and 1.8× the time per step), attention
    # at 4×4 and in the middle.
    "digits": dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        base_channels=64,
        channel_multipliers=(1, 1),
        num_res_blocks=2,
        attention_levels=(1,),
        attention_heads=1,
        dropout=0.1,
        norm_num_groups=32,
        norm_eps=1e-6,
    ),
}


# The same networks predicting ε and v (2 × in_channels outputs, ε first), for a learned reverse variance
# log σ_t² = ((v+1)/2) log β_t + (1 − (v+1)/2) log β̃_t (Nichol & Dhariwal 2021; the scheduler's
# variance_type="learned_range"). Only the last convolution is wider.
for _name in list(PRESETS):
    PRESETS[f"{_name}-learned-variance"] = dict(PRESETS[_name], out_channels=2 * PRESETS[_name]["in_channels"])
del _name


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def fourier_features(sample: torch.Tensor, exponents: Sequence[int]) -> torch.Tensor:
    r"""x_t with sin(2^n π x_t) and cos(2^n π x_t) of every channel appended, n ∈ ``exponents`` (Kingma et al.
    2021, VDM, appendix C).

    At high SNR the Bayes denoiser of data on a grid is a function of x_t modulo the grid spacing, which a network
    of smooth activations on x_t alone resolves poorly; 2^n π x_t with 2^n ≈ 2 / spacing hands it that phase
    directly. For [−1, 1] images the 8-bit bins are 2/255 wide (n = 7, 8); the digits' 17 levels are 1/8 apart
    (n = 4). Output channels: ``C · (1 + 2 · len(exponents))``, ordered x, then sines, then cosines, per exponent.
    """
    if not exponents:
        return sample
    frequencies = torch.pi * torch.tensor([2.0 ** n for n in exponents], dtype=sample.dtype, device=sample.device)
    # (B, C, H, W) → (B, C·N, H, W): channel c of exponent n at index n_index·C + c.
    phases = (frequencies[:, None, None, None, None] * sample[None]).transpose(0, 1).flatten(1, 2)
    return torch.cat([sample, torch.sin(phases), torch.cos(phases)], dim=1)


def sinusoidal_embedding(timesteps: torch.Tensor, frequencies: torch.Tensor, flip_sin_to_cos: bool = False) -> torch.Tensor:
    """The Transformer's sinusoidal position embedding, applied to diffusion timesteps.

    ``emb[b] = [sin(t_b ω_0), …, sin(t_b ω_{d/2-1}), cos(t_b ω_0), …, cos(t_b ω_{d/2-1})]``
    with ``ω_i = 10000^(-i / (d/2 - 1))`` (the DDPM code's convention: sines first, and
    the last frequency exactly 1/10000).

    Args:
        timesteps: ``(B,)`` timesteps, integer or fractional.
        frequencies: ``(d/2,)`` the ω_i, float32.

        flip_sin_to_cos: put the cosines first (diffusers' ``UNet2DModel`` default; DDPM puts sines first).

    Returns:
        ``(B, d)`` float32 embedding (``d = 2 · len(frequencies)``).
    """
    # Always float32: at t ≈ 1000 the phases need more precision than fp16/bf16 have.
    angles = timesteps.to(torch.float32)[:, None] * frequencies[None, :]
    halves = [torch.cos(angles), torch.sin(angles)] if flip_sin_to_cos else [torch.sin(angles), torch.cos(angles)]
    return torch.cat(halves, dim=-1)


class TimestepEmbedding(nn.Module):
    """t ↦ MLP(sinusoidal(t)): the conditioning vector every residual block receives.

    The embedding has ``channels`` dimensions; the MLP (Linear, SiLU, Linear) maps it
    to ``embedding_dim`` (4 × base channels in DDPM).
    """

    def __init__(self, channels: int, embedding_dim: int, flip_sin_to_cos: bool = False, freq_shift: float = 1.0):
        super().__init__()
        self.channels = channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        # The frequencies depend only on the width: compute them once. Not persistent —
        # they are not learned and do not belong in a checkpoint.
        self.register_buffer("frequencies", self._frequencies(channels, freq_shift=freq_shift), persistent=False)
        self.linear_1 = nn.Linear(channels, embedding_dim)
        self.linear_2 = nn.Linear(embedding_dim, embedding_dim)

    @staticmethod
    def _frequencies(channels: int, device: Optional[torch.device] = None, freq_shift: float = 1.0) -> torch.Tensor:
        half = channels // 2
        # ω_i = 10000^(-i / (half - s)), i = 0 … half-1, s = freq_shift (DDPM: 1, so the last is exactly
        # 1/10000; UNet2DModel's default: 0), worked out in float64 and rounded once to float32 (the
        # max(…, 1) guards half = s).
        exponent = torch.arange(half, dtype=torch.float64) / max(half - freq_shift, 1)
        return torch.exp(-math.log(10000.0) * exponent).to(device=device, dtype=torch.float32)

    def _apply(self, fn, *args, **kwargs):
        # `.to(device)`, `.half()`, … also cast buffers. Re-create the frequencies in
        # float32 on the new device instead: rounded to fp16 they would shift the phase
        # of large t by a sizeable fraction of a radian.
        super()._apply(fn, *args, **kwargs)
        self.frequencies = self._frequencies(self.channels, device=self.frequencies.device, freq_shift=self.freq_shift)
        return self

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(B,)`` timesteps → ``(B, embedding_dim)`` conditioning vectors in ``dtype``."""
        emb = sinusoidal_embedding(timesteps, self.frequencies, self.flip_sin_to_cos)
        if self.channels % 2 == 1:  # odd width: one zero column, so the shapes still fit
            emb = F.pad(emb, (0, 1))
        emb = emb.to(dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient is being recorded (sampling): one allocation fewer."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


class Dropout(nn.Dropout):
    """Inverted dropout, drawing its mask from uniform noise.

    The same distribution as ``nn.Dropout`` (each entry zeroed with probability ``p``,
    survivors scaled by 1/(1-p)), but on CPU ``rand`` + compare is about twice as fast
    as the ``bernoulli_`` that ``nn.Dropout`` uses, and dropout runs in every block.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # 0 or 1/(1-p)
        return x * keep


class ResidualBlock(nn.Module):
    """``x + F(x, t)`` with F = conv(dropout(SiLU(GN(conv(SiLU(GN(x))) + proj(temb))))).

    The timestep enters as a per-channel bias after the first convolution; when the
    number of channels changes, the identity path is a 1×1 convolution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, dropout: float, groups: int, eps: float
    ):
        super().__init__()
        self.norm_1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv_1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_proj = nn.Linear(temb_channels, out_channels)
        self.norm_2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = Dropout(dropout)
        self.conv_2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, H, W)``; ``temb``: ``(B, T)``, already passed through SiLU."""
        h = self.conv_1(_silu(self.norm_1(x)))
        # The additions are in place: a convolution's backward never needs its output.
        h += self.time_proj(temb)[:, :, None, None]
        h = self.conv_2(self.dropout(_silu(self.norm_2(h))))
        h += x if self.shortcut is None else self.shortcut(x)
        return h

    # Parameter names of diffusers' ResnetBlock2D.
    diffusers_names = {
        "norm_1": "norm1",
        "conv_1": "conv1",
        "time_proj": "time_emb_proj",
        "norm_2": "norm2",
        "conv_2": "conv2",
        "shortcut": "conv_shortcut",
    }


class AttentionBlock(nn.Module):
    """``x + W_o · softmax(q kᵀ / √d) v`` over the H·W positions, (q, k, v) = W_qkv · GN(x).

    One fused projection produces q, k and v (its weight is diffusers' to_q, to_k and
    to_v stacked); ``heads`` splits the channels into independent heads.
    """

    # Parameter names of diffusers' Attention block; the fused qkv projection is its to_q, to_k, to_v stacked.
    diffusers_names = {"norm": "group_norm", "proj_out": "to_out.0"}
    diffusers_qkv = ("to_q", "to_k", "to_v")

    def __init__(self, channels: int, heads: int, groups: int, eps: float):
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"attention_heads={heads} does not divide the {channels} channels of an attention block")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        n, d = height * width, c // self.heads
        # (B, C, H, W) → (B, N, C): each position is a token.
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        # (B, N, 3C) → three (B, heads, N, d) views, no copies.
        q, k, v = self.qkv(tokens).view(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        h = F.scaled_dot_product_attention(q, k, v)  # scale 1/√d
        h = h.transpose(1, 2).reshape(b, n, c)  # heads back side by side
        h = self.proj_out(h).transpose(1, 2).view(b, c, height, width)
        return x + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3×3 convolution.

    The input is zero-padded on the right and bottom only (TensorFlow's "SAME" for an
    even size, as in the DDPM code), so output pixel (i, j) sees input rows 2i … 2i+2.
    With ``padding=1`` (diffusers' ``UNet2DModel`` default) the convolution pads one pixel on every
    side instead, so output pixel (i, j) sees input rows 2i−1 … 2i+1.
    """

    def __init__(self, channels: int, padding: int = 0):
        super().__init__()
        if padding not in (0, 1):
            raise ValueError(f"downsample_padding must be 0 or 1, got {padding}")
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x if self.padding else F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour up-sampling, then a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or the decoder: residual blocks, each followed by
    self-attention if the level has it, then the change of resolution (if any)."""

    def __init__(
        self,
        res_blocks: List[ResidualBlock],
        attentions: List[AttentionBlock],
        resample: Optional[nn.Module],
    ):
        super().__init__()
        self.res_blocks = nn.ModuleList(res_blocks)
        self.attentions = nn.ModuleList(attentions)  # empty, or one per residual block
        self.resample = resample


class Middle(nn.Module):
    """The bottleneck: residual block, self-attention, residual block."""

    def __init__(self, channels: int, temb_channels: int, heads: int, dropout: float, groups: int, eps: float):
        super().__init__()
        self.res_block_1 = ResidualBlock(channels, channels, temb_channels, dropout, groups, eps)
        self.attention = AttentionBlock(channels, heads, groups, eps)
        self.res_block_2 = ResidualBlock(channels, channels, temb_channels, dropout, groups, eps)


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


@dataclass
class DDPMFromScratchUNetOutput(BaseOutput):
    """Output of :class:`DDPMFromScratchUNet`.

    Args:
        sample: ``(B, out_channels, H, W)`` the predicted noise ε_θ(x_t, t).
    """

    sample: torch.Tensor


class DDPMFromScratchUNet(ModelMixin, ConfigMixin):
    r"""The DDPM U-Net ε_θ(x_t, t).

    Level ``i`` (``i = 0 … L-1``, ``L = len(channel_multipliers)``) works at resolution
    ``sample_size / 2**i`` with ``base_channels * channel_multipliers[i]`` channels. The
    encoder runs ``num_res_blocks`` residual blocks per level and halves the resolution
    between levels; the decoder runs ``num_res_blocks + 1`` per level (one per skip
    connection) and doubles it. The timestep embedding has ``4 * base_channels``
    dimensions.

    Args:
        sample_size: size of the images, an int (square) or (height, width); read by
            pipelines to shape their noise. The network itself takes any size divisible
            by ``2**(L-1)``.
        in_channels: channels of x_t.
        out_channels: channels of the prediction: ``in_channels`` for ε-prediction, ``2 * in_channels``
            for ε and a learned variance (ε first, then v; pair it with a scheduler of
            ``variance_type="learned_range"``, see :attr:`learns_variance`).
        base_channels: channels at level 0 (``ch`` in the DDPM code); also the width of
            the sinusoidal timestep embedding.
        channel_multipliers: channels of level ``i`` = ``base_channels * channel_multipliers[i]``
            (``ch_mult``); its length is the number of levels.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_levels: indices of the levels whose residual blocks are each followed by
            self-attention (``(1,)`` = 16×16 for a 32×32 input). The middle always has one.
        attention_heads: heads of every self-attention block (DDPM: 1); must divide the
            channels of each attention block.
        dropout: dropout probability inside every residual block (before its second conv).
        norm_num_groups: groups of every GroupNorm; must divide every channel count.
        norm_eps: epsilon of every GroupNorm.
        attention_head_dim: if set, every attention block gets ``channels // attention_head_dim`` heads
            instead of ``attention_heads`` (how diffusers' ``UNet2DModel`` counts them, 8 by default there).
        flip_sin_to_cos: the timestep embedding puts cosines first (``UNet2DModel``'s default), not sines (DDPM).
        freq_shift: s in the embedding's frequencies 10000^(−i/(d/2 − s)): 1 in DDPM, 0 by ``UNet2DModel``'s
            default.
        downsample_padding: 0 pads right/bottom before each stride-2 convolution (DDPM); 1 pads every side
            (``UNet2DModel``'s default).
        fourier_feature_exponents: n of the features sin(2^n π x_t), cos(2^n π x_t) appended to x_t before the
            first convolution (VDM; see :func:`fourier_features`). Empty (the default, and DDPM): x_t alone, the
            layout ``UNet2DModel`` has; a network with features has no ``UNet2DModel`` equivalent.
        num_class_embeds: rows of a class embedding added to the timestep embedding (``UNet2DModel``'s option
            of the same name): ε_θ(x_t, t, c). The last row is the null label ∅ of classifier-free guidance
            (Ho & Salimans 2021), so the model knows ``num_class_embeds − 1`` classes, and ``class_labels=None``
            means ∅. None (the default): unconditional.
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["norm", "time_embedding"]
    _no_split_modules = ["ResidualBlock", "AttentionBlock"]

    @register_to_config
    def __init__(
        self,
        sample_size: Optional[Union[int, Tuple[int, int]]] = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 128,
        channel_multipliers: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1,),
        attention_heads: int = 1,
        dropout: float = 0.1,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        attention_head_dim: Optional[int] = None,
        flip_sin_to_cos: bool = False,
        freq_shift: float = 1.0,
        downsample_padding: int = 0,
        fourier_feature_exponents: Sequence[int] = (),
        num_class_embeds: Optional[int] = None,
    ):
        super().__init__()
        if num_class_embeds is not None and (isinstance(num_class_embeds, bool) or not isinstance(num_class_embeds, int)
                                             or num_class_embeds < 2):
            raise ValueError(f"num_class_embeds must be an integer ≥ 2 (the classes and the null label), "
                             f"got {num_class_embeds!r}")
        # JSON turns tuples into lists; keep the config the same whichever way it came.
        channel_multipliers = tuple(int(m) for m in channel_multipliers)
        attention_levels = tuple(sorted(int(i) for i in attention_levels))
        fourier_feature_exponents = tuple(int(n) for n in fourier_feature_exponents)
        if isinstance(sample_size, (list, tuple)):
            sample_size = tuple(int(s) for s in sample_size)
        self.register_to_config(
            sample_size=sample_size, channel_multipliers=channel_multipliers, attention_levels=attention_levels,
            fourier_feature_exponents=fourier_feature_exponents,
        )
        num_levels = len(channel_multipliers)
        if num_levels == 0:
            raise ValueError("channel_multipliers must name at least one level")
        bad_levels = [i for i in attention_levels if not 0 <= i < num_levels]
        if bad_levels:
            raise ValueError(f"attention_levels={attention_levels} names levels outside 0…{num_levels - 1}")

        temb_channels = 4 * base_channels
        groups, eps = norm_num_groups, norm_eps

        def res_block(c_in: int, c_out: int) -> ResidualBlock:
            return ResidualBlock(c_in, c_out, temb_channels, dropout, groups, eps)

        def heads_for(width: int) -> int:
            if attention_head_dim is None:
                return attention_heads
            if width % attention_head_dim:
                raise ValueError(f"attention_head_dim={attention_head_dim} does not divide an attention block's "
                                 f"{width} channels")
            return width // attention_head_dim

        self.time_embedding = TimestepEmbedding(base_channels, temb_channels, flip_sin_to_cos, freq_shift)
        self.class_embedding = None if num_class_embeds is None else nn.Embedding(num_class_embeds, temb_channels)
        self.conv_in = nn.Conv2d(
            in_channels * (1 + 2 * len(fourier_feature_exponents)), base_channels, kernel_size=3, padding=1)

        # Encoder. `skip_channels` records the width of every activation the decoder
        # will be handed, in the order they are produced.
        channels = base_channels
        skip_channels = [channels]
        down_levels = []
        for i, multiplier in enumerate(channel_multipliers):
            out = base_channels * multiplier
            blocks, attentions = [], []
            for _ in range(num_res_blocks):
                blocks.append(res_block(channels, out))
                if i in attention_levels:
                    attentions.append(AttentionBlock(out, heads_for(out), groups, eps))
                channels = out
                skip_channels.append(channels)
            downsample = Downsample(channels, downsample_padding) if i < num_levels - 1 else None
            if downsample is not None:
                skip_channels.append(channels)
            down_levels.append(Level(blocks, attentions, downsample))
        self.down_levels = nn.ModuleList(down_levels)

        self.middle = Middle(channels, temb_channels, heads_for(channels), dropout, groups, eps)

        # Decoder, built from the lowest resolution up, consuming the skips last-in first-out.
        up_levels = []
        for i in reversed(range(num_levels)):
            out = base_channels * channel_multipliers[i]
            blocks, attentions = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(res_block(channels + skip_channels.pop(), out))
                if i in attention_levels:
                    attentions.append(AttentionBlock(out, heads_for(out), groups, eps))
                channels = out
            upsample = Upsample(channels) if i > 0 else None
            up_levels.append(Level(blocks, attentions, upsample))
        # Index the decoder by level too: up_levels[i] works at the resolution of down_levels[i].
        self.up_levels = nn.ModuleList(reversed(up_levels))

        self.norm_out = nn.GroupNorm(groups, channels, eps=eps)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

        self.gradient_checkpointing = False

    @property
    def learns_variance(self) -> bool:
        """Whether the network also predicts its reverse variance: ``out_channels == 2 * in_channels``.

        The first ``in_channels`` outputs are ε_θ, the rest v, which a ``variance_type="learned_range"``
        scheduler reads as log σ_t² = ((v+1)/2) log β_t + (1 − (v+1)/2) log β̃_t (Nichol & Dhariwal 2021).
        """
        return self.config.out_channels == 2 * self.config.in_channels

    # ---------------------------------------------------------------- construction helpers

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "DDPMFromScratchUNet":
        """A freshly initialised network from a preset of :data:`PRESETS`, with config overrides,
        e.g. ``DDPMFromScratchUNet.from_preset("digits", dropout=0.0)``.

        Raises:
            ValueError: for an unknown name, listing the available ones.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available presets: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------------- forward

    def _timesteps(self, timestep: Union[torch.Tensor, float, int], batch_size: int, device: torch.device):
        """A Python number, a 0-d tensor, a (1,) or a (B,) tensor → a (B,) tensor on ``device``."""
        if not torch.is_tensor(timestep):
            timestep = torch.tensor(timestep, device=device)  # keeps fractional times fractional
        timestep = timestep.to(device).reshape(-1)
        if timestep.shape[0] == 1:
            return timestep.expand(batch_size)
        if timestep.shape[0] != batch_size:
            raise ValueError(f"timestep has {timestep.shape[0]} entries for a batch of {batch_size}")
        return timestep

    def _call(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        """Run a block, through gradient checkpointing when it is enabled and gradients are on."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    @property
    def null_class_label(self) -> Optional[int]:
        """The index of the null label ∅ (the last row of the class embedding); None when unconditional."""
        return None if self.config.get("num_class_embeds") is None else self.config.num_class_embeds - 1

    def _class_labels(self, class_labels: Optional[torch.Tensor], batch_size: int,
                      device: torch.device) -> torch.Tensor:
        if class_labels is None:
            return torch.full((batch_size,), self.null_class_label, dtype=torch.long, device=device)
        labels = torch.as_tensor(class_labels, device=device)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integers, got dtype {labels.dtype}")
        labels = labels.reshape(-1).long()
        if labels.numel() == 1 and batch_size > 1:
            labels = labels.expand(batch_size)
        if labels.numel() != batch_size:
            raise ValueError(f"class_labels has {labels.numel()} labels for a batch of {batch_size}")
        if bool(((labels < 0) | (labels >= self.config.num_class_embeds)).any()):
            bad = labels[(labels < 0) | (labels >= self.config.num_class_embeds)][0].item()
            raise ValueError(f"class label {bad} is outside [0, num_class_embeds={self.config.num_class_embeds})")
        return labels

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        class_labels: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[DDPMFromScratchUNetOutput, Tuple[torch.Tensor]]:
        """Predict the noise ε in ``sample`` = x_t (given the class c, for a class-conditional network).

        Args:
            sample: ``(B, in_channels, H, W)`` noisy images x_t.
            timestep: t, as a Python number, a 0-d tensor or a ``(B,)`` tensor (diffusers'
                0-based indexing; a single value is shared by the batch). Fractional
                values are used as they are (``UNet2DModel`` truncates a Python float to
                an integer; a float tensor it keeps).
            class_labels: ``(B,)`` integer classes in [0, num_class_embeds), the last being the null label ∅
                (`null_class_label`); None on a conditional network means ∅ for the whole batch.
            return_dict: return a :class:`DDPMFromScratchUNetOutput` (else a 1-tuple).

        Returns:
            ε_θ(x_t, t), shaped ``(B, out_channels, H, W)`` (followed by v when :attr:`learns_variance`).
        """
        t = self._timesteps(timestep, sample.shape[0], sample.device)
        temb = self.time_embedding(t, dtype=self.conv_in.weight.dtype)
        if self.class_embedding is not None:
            # As UNet2DModel adds it: to the timestep embedding, before the non-linearity.
            temb = temb + self.class_embedding(self._class_labels(class_labels, sample.shape[0], sample.device))
        elif class_labels is not None:
            raise ValueError("class_labels given to an unconditional network (num_class_embeds is None)")
        # SiLU of the embedding once here, rather than once in every residual block.
        temb = F.silu(temb)

        # Encoder: keep every activation for the skip connections.
        h = self.conv_in(fourier_features(sample, self.config.get("fourier_feature_exponents", ())))
        skips = [h]
        for level in self.down_levels:
            for j, block in enumerate(level.res_blocks):
                h = self._call(block, h, temb)
                if len(level.attentions):
                    h = self._call(level.attentions[j], h)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)

        h = self._call(self.middle.res_block_1, h, temb)
        h = self._call(self.middle.attention, h)
        h = self._call(self.middle.res_block_2, h, temb)

        # Decoder: lowest resolution first, each block takes one skip (last in, first out).
        for level in reversed(self.up_levels):
            for j, block in enumerate(level.res_blocks):
                h = self._call(block, torch.cat([h, skips.pop()], dim=1), temb)
                if len(level.attentions):
                    h = self._call(level.attentions[j], h)
            if level.resample is not None:
                h = level.resample(h)

        eps = self.conv_out(_silu(self.norm_out(h)))
        if not return_dict:
            return (eps,)
        return DDPMFromScratchUNetOutput(sample=eps)

    # ------------------------------------------------------------ diffusers interop

    def _diffusers_module_names(self) -> List[Tuple[str, str]]:
        """(our module, diffusers' UNet2DModel module) for every module that holds weights.

        diffusers orders its decoder blocks as they run (lowest resolution first); ours
        are indexed by level.
        """
        num_levels = len(self.config.channel_multipliers)
        pairs = [
            ("time_embedding.linear_1", "time_embedding.linear_1"),
            ("time_embedding.linear_2", "time_embedding.linear_2"),
            ("conv_in", "conv_in"),
            *([("class_embedding", "class_embedding")] if self.class_embedding is not None else []),
            ("middle.res_block_1", "mid_block.resnets.0"),
            ("middle.attention", "mid_block.attentions.0"),
            ("middle.res_block_2", "mid_block.resnets.1"),
            ("norm_out", "conv_norm_out"),
            ("conv_out", "conv_out"),
        ]
        for side, levels, theirs, resample in (
            ("down_levels", self.down_levels, "down_blocks", "downsamplers"),
            ("up_levels", self.up_levels, "up_blocks", "upsamplers"),
        ):
            for i, level in enumerate(levels):
                k = i if side == "down_levels" else num_levels - 1 - i
                for j in range(len(level.res_blocks)):
                    pairs.append((f"{side}.{i}.res_blocks.{j}", f"{theirs}.{k}.resnets.{j}"))
                for j in range(len(level.attentions)):
                    pairs.append((f"{side}.{i}.attentions.{j}", f"{theirs}.{k}.attentions.{j}"))
                if level.resample is not None:
                    pairs.append((f"{side}.{i}.resample", f"{theirs}.{k}.{resample}.0"))
        return pairs

    def _diffusers_parameter_names(self) -> List[Tuple[str, Tuple[str, ...]]]:
        """(our parameter, diffusers' parameters) for every tensor: one name, or (to_q, to_k, to_v) for the
        fused qkv projection, whose weight is theirs stacked in that order. The one map both directions walk."""
        pairs = []
        for ours, theirs in self._diffusers_module_names():
            module = self.get_submodule(ours)
            for name in module.state_dict():
                child, _, kind = name.rpartition(".")  # e.g. ("conv_1", "weight")
                if isinstance(module, AttentionBlock) and child == "qkv":
                    fused = tuple(f"{theirs}.{part}.{kind}" for part in AttentionBlock.diffusers_qkv)
                    pairs.append((f"{ours}.{name}", fused))
                    continue
                if isinstance(module, (AttentionBlock, ResidualBlock)):
                    child = type(module).diffusers_names[child]
                pairs.append((f"{ours}.{name}", (".".join(p for p in (theirs, child, kind) if p),)))
        return pairs

    def _to_diffusers_state_dict(self) -> Dict[str, torch.Tensor]:
        """Our weights under UNet2DModel's parameter names (q, k, v split apart)."""
        ours_state = self.state_dict()
        state = {}
        for ours, theirs in self._diffusers_parameter_names():
            for name, part in zip(theirs, ours_state[ours].chunk(len(theirs), dim=0)):
                state[name] = part.clone()
        return state

    def _load_diffusers_state_dict(self, theirs_state: Dict[str, torch.Tensor]) -> None:
        """Load weights named as in UNet2DModel; every tensor on both sides must be used."""
        pairs = self._diffusers_parameter_names()
        expected = {name for _, theirs in pairs for name in theirs}
        missing = sorted(expected - set(theirs_state))
        unexpected = sorted(set(theirs_state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"UNet2DModel weights do not match this layout: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        ours_state = {}
        for ours, theirs in pairs:
            parts = [theirs_state[name] for name in theirs]
            ours_state[ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        self.load_state_dict(ours_state, strict=True)

    def _attention_channels(self) -> List[int]:
        """Channels of every self-attention block (attention levels, then the middle)."""
        channels = [self.config.base_channels * self.config.channel_multipliers[i] for i in self.config.attention_levels]
        return channels + [self.config.base_channels * self.config.channel_multipliers[-1]]

    def to_unet2d(self) -> "UNet2DModel":  # noqa: F821  (diffusers.UNet2DModel)
        """The equivalent diffusers ``UNet2DModel`` (DDPM layout), with these weights.

        Raises:
            ValueError: with several heads, if the attention blocks differ in width —
                UNet2DModel has one ``attention_head_dim`` for all of them.
        """
        from diffusers import UNet2DModel

        cfg = self.config
        if cfg.get("fourier_feature_exponents"):
            raise ValueError(
                f"fourier_feature_exponents={list(cfg.fourier_feature_exponents)}: UNet2DModel has no Fourier "
                "features of its input, so this network has no UNet2DModel equivalent"
            )
        num_levels = len(cfg.channel_multipliers)
        heads = cfg.attention_heads
        if cfg.get("attention_head_dim") is not None:
            attention_head_dim = cfg.attention_head_dim
        elif heads == 1:
            attention_head_dim = None  # UNet2DModel: None = one head as wide as the block
        else:
            head_dims = sorted({c // heads for c in self._attention_channels()})
            if len(head_dims) != 1:
                raise ValueError(
                    f"attention_heads={heads} gives head widths {head_dims}; UNet2DModel needs one attention_head_dim"
                )
            attention_head_dim = head_dims[0]
        unet = UNet2DModel(
            sample_size=cfg.sample_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.out_channels,
            center_input_sample=False,
            time_embedding_type="positional",
            flip_sin_to_cos=cfg.get("flip_sin_to_cos", False),  # DDPM: sines first
            freq_shift=cfg.get("freq_shift", 1),  # DDPM: ω_i = 10000^(-i / (d/2 - 1))
            down_block_types=tuple(
                "AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(num_levels)
            ),
            mid_block_type="UNetMidBlock2D",
            up_block_types=tuple(
                "AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(range(num_levels))
            ),
            block_out_channels=tuple(cfg.base_channels * m for m in cfg.channel_multipliers),
            layers_per_block=cfg.num_res_blocks,
            mid_block_scale_factor=1,
            downsample_padding=cfg.get("downsample_padding", 0),  # DDPM: pad right/bottom, then stride-2 conv
            downsample_type="conv",
            upsample_type="conv",
            dropout=cfg.dropout,
            act_fn="silu",
            attention_head_dim=attention_head_dim,
            norm_num_groups=cfg.norm_num_groups,
            norm_eps=cfg.norm_eps,
            resnet_time_scale_shift="default",
            add_attention=True,
            num_class_embeds=cfg.get("num_class_embeds"),
        )
        unet.load_state_dict(self._to_diffusers_state_dict(), strict=True)
        unet.train(self.training)
        unet = unet.to(device=self.device)
        return unet if unet.dtype == self.dtype else unet.to(dtype=self.dtype)

    @classmethod
    def from_unet2d(cls, unet: "UNet2DModel") -> "DDPMFromScratchUNet":  # noqa: F821
        """The equivalent network (config and weights) of a diffusers ``UNet2DModel`` in
        the DDPM layout, e.g. the converted ``google/ddpm-cifar10-32``.

        Raises:
            ValueError: naming the option and its value, for any ``UNet2DModel`` setting
                this network does not have (another block type, Fourier time features,
                class conditioning, scale-shift conditioning, …).
        """
        from diffusers import UNet2DModel

        if not isinstance(unet, UNet2DModel):
            raise TypeError(f"expected a diffusers UNet2DModel, got {type(unet).__name__}")
        config = _config_from_unet2d(dict(unet.config))
        model = cls(**config)
        model._load_diffusers_state_dict(unet.state_dict())
        model.train(unet.training)
        model = model.to(device=unet.device)
        return model if unet.dtype == model.dtype else model.to(dtype=unet.dtype)


def _config_from_unet2d(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Our config for a UNet2DModel config, refusing what the DDPM network cannot express."""

    def refuse(option: str, value: Any, why: str) -> None:
        raise ValueError(f"UNet2DModel option {option}={value!r} is not supported: {why}")

    def require(option: str, allowed: Sequence[Any], why: str) -> None:
        if cfg.get(option) not in allowed:
            refuse(option, cfg.get(option), why)

    channels = list(cfg["block_out_channels"])
    base, num_levels = channels[0], len(channels)

    require("time_embedding_type", ["positional"], "the timestep embedding is sinusoidal")
    require("time_embedding_dim", [None, 4 * base], "the time embedding has 4 × base channels")
    require("center_input_sample", [False], "inputs are used as they are")
    require("class_embed_type", [None], "a class enters as a learned embedding (num_class_embeds)")
    num_class_embeds = cfg.get("num_class_embeds")
    if num_class_embeds is not None and (not isinstance(num_class_embeds, int) or num_class_embeds < 2):
        refuse("num_class_embeds", num_class_embeds, "the classes and a null label need at least 2 rows")
    require("act_fn", ["silu", "swish"], "the non-linearity is SiLU")
    require("resnet_time_scale_shift", ["default"], "the timestep enters as an added bias")
    require("downsample_padding", [0, 1], "down-sampling pads right/bottom (0) or every side (1)")
    require("downsample_type", ["conv", None], "down-sampling is a strided convolution")
    require("upsample_type", ["conv", None], "up-sampling is nearest-neighbour, then a convolution")
    require("mid_block_type", ["UNetMidBlock2D"], "the middle is (res, attn, res)")
    require("mid_block_scale_factor", [1], "residual outputs are not rescaled")
    require("add_attention", [True], "the middle always has self-attention")
    require("attn_norm_num_groups", [None, cfg.get("norm_num_groups")], "all GroupNorms share one group count")
    if not isinstance(cfg.get("norm_num_groups"), int):
        refuse("norm_num_groups", cfg.get("norm_num_groups"), "a fixed number of GroupNorm groups is needed")

    multipliers = [c // base for c in channels]
    if any(base * m != c for m, c in zip(multipliers, channels)):
        refuse("block_out_channels", tuple(channels), "each level's width must be a multiple of the first")

    def strip(name: str) -> str:  # diffusers treats "UNetResDownBlock2D" as "DownBlock2D"
        return name[7:] if name.startswith("UNetRes") else name

    down = [strip(b) for b in cfg["down_block_types"]]
    up = [strip(b) for b in cfg["up_block_types"]]
    if any(b not in ("DownBlock2D", "AttnDownBlock2D") for b in down) or len(down) != num_levels:
        refuse("down_block_types", tuple(cfg["down_block_types"]), "only DownBlock2D and AttnDownBlock2D")
    if any(b not in ("UpBlock2D", "AttnUpBlock2D") for b in up) or len(up) != num_levels:
        refuse("up_block_types", tuple(cfg["up_block_types"]), "only UpBlock2D and AttnUpBlock2D")
    attention_levels = [i for i, b in enumerate(down) if b == "AttnDownBlock2D"]
    up_attention_levels = [num_levels - 1 - j for j, b in enumerate(up) if b == "AttnUpBlock2D"]
    if sorted(up_attention_levels) != attention_levels:
        refuse("up_block_types", tuple(cfg["up_block_types"]), "attention must sit at the same levels as the encoder's")

    # UNet2DModel gives every attention block channels // attention_head_dim heads (one head when None);
    # so does this network when its own attention_head_dim is set.
    head_dim = cfg.get("attention_head_dim")
    attention_channels = [channels[i] for i in attention_levels] + [channels[-1]]
    if head_dim is not None and any(c % head_dim for c in attention_channels):
        refuse("attention_head_dim", head_dim, f"it must divide every attention block's width {attention_channels}")
    freq_shift = cfg.get("freq_shift", 1)
    if not isinstance(freq_shift, (int, float)) or freq_shift >= base // 2:
        refuse("freq_shift", freq_shift, f"it must be a number below half the embedding width {base}")

    return dict(
        sample_size=cfg.get("sample_size"),
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        base_channels=base,
        channel_multipliers=tuple(multipliers),
        num_res_blocks=cfg["layers_per_block"],
        attention_levels=tuple(attention_levels),
        attention_heads=1,
        attention_head_dim=head_dim,
        dropout=cfg.get("dropout", 0.0),
        norm_num_groups=cfg["norm_num_groups"],
        norm_eps=cfg["norm_eps"],
        flip_sin_to_cos=bool(cfg.get("flip_sin_to_cos", False)),
        freq_shift=freq_shift,
        downsample_padding=cfg.get("downsample_padding", 0),
        num_class_embeds=num_class_embeds,
    )
