#!/usr/bin/env python
"""Train a DDPM with L_hybrid (default), L_simple or L_vlb: `accelerate launch scripts/train.py [options]`.

With no options it trains the `digits` preset on the 8×8 UCI digits that ship with
scikit-learn and writes a loadable pipeline, sample grids and a model card to
./ddpm-digits. See `--help` for your own data, mixed precision, resuming and more.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.data.images import (
    build_transform,
    check_resolution,
    load_image_dataset,
    random_horizontal_flip,
    with_image_transform,
)
from ddpm_from_scratch.data.labels import class_names, with_image_and_label_transform
from ddpm_from_scratch.evaluation.evaluate import evaluate_folder
from ddpm_from_scratch.figures.grid import image_grid
from ddpm_from_scratch.hub.upload import HubUploadError, push_pipeline_folder
from ddpm_from_scratch.hub.model_card import render_model_card
from ddpm_from_scratch.training.checkpoints import resolve_resume_checkpoint
from ddpm_from_scratch.training.loop import Hook, TrainingConfig, TrainingResult, build_accelerator, train_loop
from ddpm_from_scratch.training.run_folder import RunFolderError, RunLock, check_fresh_run
from ddpm_from_scratch.training.step import (
    check_model_for_loss,
    compile_for_training,
    denoising_loss,
    variance_type_for_loss,
)
from ddpm_from_scratch.training.losses import DEFAULT_VLB_WEIGHT, LOSS_TYPES
from ddpm_from_scratch.hub.loading import exit_with_usage_error, looks_like_a_path
from ddpm_from_scratch.sampling.samplers import (
    SAMPLER_HELP,
    default_num_inference_steps,
    sampler_argument,
    scheduler_for,
)
from ddpm_from_scratch.schedulers.log_snr_schedules import (high_snr_head_betas, high_snr_prefix_betas,
                                                          log_snr_linear_betas)
from ddpm_from_scratch.training.timestep_sampling import TIMESTEP_SAMPLERS, create_timestep_sampler
from ddpm_from_scratch.models.unet import PRESETS

logger = logging.getLogger("train")
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
GRID_SEED = 1234
# Measured by benchmarks/learned_variance_digits.py (README, "Learn the variance"): DPM-Solver++ at 25 steps
# kept the classifier FID of 1000-step DDPM on the default run, at 1/40 of the network calls.
DEFAULT_SAMPLER = "dpm-solver"
LOSS_DESCRIPTIONS = {
    "simple": "L_simple (Ho et al. 2020)",
    "hybrid": "L_hybrid = L_simple + {vlb_weight}·L_vlb (Nichol & Dhariwal 2021)",
    "vlb": "L_vlb, the variational bound (Nichol & Dhariwal 2021)",
}
VARIANCE_DESCRIPTIONS = {
    "fixed_small": "fixed, β̃_t (the posterior variance)",
    "fixed_large": "fixed, β_t",
    "learned_range": "learned: log σ_t² = f·log β_t + (1 − f)·log β̃_t, f = (v + 1)/2 from the network",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data (default: the embedded 8×8 digits, training split)")
    data.add_argument("--dataset_name", help="A Hub dataset id, or a folder written by `Dataset.save_to_disk`.")
    data.add_argument("--train_data_dir", help="A folder of images, loaded with the `imagefolder` builder.")
    data.add_argument("--image_column", default="image")
    data.add_argument("--cache_dir", help="Where `datasets` caches downloads.")
    data.add_argument("--resolution", type=int, help="Training resolution; defaults to the model's sample_size.")
    data.add_argument("--center_crop", action="store_true", help="Resize the shorter side, then crop the centre.")
    data.add_argument("--random_flip", action="store_true", help="Flip images left-right with probability 1/2.")
    data.add_argument("--dataloader_num_workers", type=int, default=0)
    data.add_argument("--label_column", default="label",
                      help="With --class_conditional: the integer (or ClassLabel) column of class labels; the digits "
                           "and an image folder's class sub-folders have 'label'.")

    model = p.add_argument_group("model")
    model.add_argument("--model_config", default="digits",
                       help=f"A U-Net preset ({', '.join(PRESETS)}) or a path to a config.json.")
    model.add_argument("--pretrained_model_name_or_path",
                       help="Fine-tune this pipeline folder / Hub id (or a U-Net folder) instead.")
    model.add_argument("--num_train_timesteps", type=int, default=1000)
    model.add_argument("--beta_schedule", default="linear")
    model.add_argument("--beta_start", type=float, default=None,
                       help="β_1 of the linear (and scaled_linear) schedule; default the scheduler's 1e-4. A smaller "
                            "β_1 raises log SNR at t = 1 to ≈ −log β_1 (the decoder's resolution) and leaves the "
                            "rest of the schedule nearly as it is.")
    model.add_argument("--beta_end", type=float, default=None, help="β_T of the linear schedule; default 0.02.")
    model.add_argument("--log_snr_max", type=float, default=None,
                       help="With --log_snr_min: β_t whose log SNR = log(ᾱ_t/(1 − ᾱ_t)) falls linearly from this value "
                            "at the first timestep to --log_snr_min at the last, saved as the scheduler's trained_betas "
                            "(so diffusers' schedulers load it); replaces --beta_schedule. A high value resolves the "
                            "8-bit grid at the decoder (σ_1² ≈ e^−log_snr_max).")
    model.add_argument("--log_snr_min", type=float, default=None, help="See --log_snr_max.")
    model.add_argument("--log_snr_head_steps", type=int, default=None, metavar="N",
                       help="With --log_snr_max and no --log_snr_min: keep the linear schedule (--beta_start, "
                            "--beta_end) but replace its first N steps by a linear fall in log SNR from --log_snr_max "
                            "to the linear schedule's own value at step N (saved as trained_betas).")
    model.add_argument("--log_snr_prefix_steps", type=int, default=None, metavar="N",
                       help="With --log_snr_max and no --log_snr_min: keep the whole linear schedule (--beta_start, "
                            "--beta_end, --num_train_timesteps T) and put N new steps before it, falling linearly in "
                            "log SNR from --log_snr_max to the linear schedule's first value; the chain has N + T "
                            "timesteps (saved as trained_betas).")
    model.add_argument("--fourier_features", type=int, nargs="+", default=None, metavar="N",
                       help="Append sin(2^N π x_t), cos(2^N π x_t) to the network's input for each N (VDM's Fourier "
                            "features; 4 resolves the digits' 17 levels, 7 8 the 8-bit grid). Such a network has no "
                            "UNet2DModel equivalent.")
    model.add_argument("--class_conditional", action="store_true",
                       help="Train ε(x_t, t, c) on the data's labels (--label_column), with a null label for "
                            "classifier-free guidance: sample with pipe(class_labels=..., guidance_scale=...).")
    model.add_argument("--class_dropout_prob", type=float, default=0.1,
                       help="With --class_conditional: p_uncond, the probability a label is replaced by the null "
                            "label (Ho & Salimans: 0.1–0.2 best).")
    model.add_argument("--prediction_type", default="epsilon")
    model.add_argument("--loss", choices=LOSS_TYPES, default="hybrid",
                       help="hybrid: L_simple + λ·L_vlb, the network also learns its variance (2×channels output, "
                            "learned_range scheduler; Nichol & Dhariwal); on the default digits run it measured 0.38 "
                            "bits/dim below simple, with samples as good at 1000 steps and better with fewer. "
                            "simple: L_simple, fixed variance β̃_t (Ho et al.). vlb: the bound alone, mean and variance.")
    model.add_argument("--vlb_weight", type=float, default=DEFAULT_VLB_WEIGHT,
                       help="λ of --loss hybrid (L_vlb = T·L_t is in bits/dim).")
    model.add_argument("--timestep_sampler", choices=TIMESTEP_SAMPLERS, default="uniform",
                       help="loss-aware: p(t) ∝ √E[L_t²] over the last 10 losses of each t, with importance weights "
                            "(Nichol & Dhariwal's resampler; meant for --loss vlb).")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--output_dir", default="ddpm-digits")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--train_batch_size", type=int, default=128, help="Per process.")
    opt.add_argument("--max_train_steps", type=int, default=None,
                     help="Optimiser steps; overrides --num_epochs. Default: 2000 when --num_epochs is not given.")
    opt.add_argument("--num_epochs", type=int, default=None)
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    opt.add_argument("--learning_rate", type=float, default=1e-3)
    opt.add_argument("--lr_scheduler", default="cosine",
                     help="Any name diffusers' get_scheduler knows: constant, constant_with_warmup, linear, cosine, ...")
    opt.add_argument("--lr_warmup_steps", type=int, default=100, help="In optimiser steps.")
    opt.add_argument("--adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument("--adam_weight_decay", type=float, default=0.0)
    opt.add_argument("--max_grad_norm", type=float, default=1.0)
    opt.add_argument("--num_threads", type=int, default=None,
                     help="CPU threads per process. Default on a machine without a GPU: the cores this process may "
                          "use divided by the local processes (accelerate launch otherwise pins 1).")
    opt.add_argument("--channels_last", action="store_true",
                     help="Train in channels-last memory format (faster convolutions on many GPUs and some CPUs).")
    opt.add_argument("--compile", action="store_true",
                     help="Compile the U-Net with TorchInductor (torch.compile): fused element-wise kernels, the "
                          "same function, other (still seeded) dropout masks. Expected to pay off on GPUs (not measured); "
                          "on a 2-core CPU it measured no faster.")
    opt.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                     help="Defaults to accelerate's config / launch flag.")
    opt.add_argument("--no_ema", dest="use_ema", action="store_false", help="Save the raw weights instead of an EMA.")
    opt.add_argument("--ema_max_decay", type=float, default=0.9999)
    opt.add_argument("--ema_inv_gamma", type=float, default=1.0)
    opt.add_argument("--ema_power", type=float, default=3 / 4)

    out = p.add_argument_group("checkpoints and outputs")
    out.add_argument("--checkpointing_steps", type=int, default=500)
    out.add_argument("--checkpoints_total_limit", type=int, default=None)
    out.add_argument("--resume_from_checkpoint",
                     help="`latest` (the newest checkpoint that verifies against its manifest), a checkpoint folder, "
                          "or a checkpoint name inside --output_dir (checkpoint-N).")
    out.add_argument("--overwrite_output_dir", action="store_true",
                     help="Start afresh in an --output_dir that holds another run's checkpoints or pipeline: its "
                          "checkpoints, pipeline, samples, logs and evaluation are removed first (and listed).")
    out.add_argument("--save_images_steps", type=int, default=1000)
    out.add_argument("--num_grid_images", type=int, default=64)
    out.add_argument("--sampler", type=sampler_argument, default=DEFAULT_SAMPLER, metavar="NAME",
                     help="The sampler of the grids and of the end-of-run evaluation. Default: the fastest whose "
                          "classifier FID stayed within 10 %% of 1000-step DDPM on the default run "
                          "(benchmarks/learned_variance_digits.py). " + SAMPLER_HELP)
    out.add_argument("--num_inference_steps", type=int, default=None,
                     help="Sampling steps for the grids and the evaluation; default: the sampler's usual count "
                          "(ddpm 1000, dpm-solver 25, ddim 50; scripts/sample.py --help lists the rest).")
    out.add_argument("--grid_scale", type=int, default=None,
                     help="Enlarge each image this many times in the sample grids; default: the smallest whole factor "
                          "that makes a grid at least 512 px wide.")
    out.add_argument("--logger", choices=["tensorboard", "none"], default="tensorboard")
    hub = p.add_argument_group("the Hub (the token comes from --hub_token, HF_TOKEN or `hf auth login`)")
    hub.add_argument("--push_to_hub", action="store_true",
                     help="Upload the pipeline, model card and sample grids (not checkpoints or logs) at the end.")
    hub.add_argument("--hub_model_id", help="The repo to push to, e.g. your-name/ddpm-digits.")
    hub.add_argument("--hub_private_repo", action="store_true")
    hub.add_argument("--hub_token", help="Never logged or saved; prefer HF_TOKEN.")
    evaluation = p.add_argument_group("evaluation at the end (scripts/evaluate.py; its numbers go into the model card)")
    evaluation.add_argument("--no_evaluate", dest="evaluate", action="store_false")
    evaluation.add_argument("--eval_num_samples", type=int, default=1000,
                            help="Samples for the classifier FID/KID (digits only).")
    evaluation.add_argument("--eval_num_bound_images", type=int, default=100,
                            help="Held-out images for the bits/dim bound.")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad values before any work is done, naming the flag."""
    if args.dataset_name and args.train_data_dir:
        raise SystemExit("error: give --dataset_name or --train_data_dir, not both.")
    positive = ["train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "save_images_steps",
                "num_grid_images", "num_inference_steps", "eval_num_samples", "eval_num_bound_images", "grid_scale"]
    for name in positive + ["max_train_steps", "num_epochs", "resolution", "checkpoints_total_limit", "num_threads"]:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name} must be a positive integer, got {value}.")
    if args.overwrite_output_dir and args.resume_from_checkpoint is not None:
        raise SystemExit("error: --overwrite_output_dir and --resume_from_checkpoint contradict each other (one "
                         "clears the folder, the other resumes from it); give one.")
    if args.push_to_hub and not args.hub_model_id:
        raise SystemExit("error: --push_to_hub needs --hub_model_id (e.g. your-name/ddpm-digits).")
    if not args.vlb_weight > 0:
        raise SystemExit(f"error: --vlb_weight must be positive, got {args.vlb_weight}.")
    if args.fourier_features is not None and args.pretrained_model_name_or_path:
        raise SystemExit("error: --fourier_features builds a new network; it cannot be combined with "
                         "--pretrained_model_name_or_path.")
    for name in ("beta_start", "beta_end"):
        value = getattr(args, name)
        if value is not None and not 0 < value < 1:
            raise SystemExit(f"error: --{name} must lie in (0, 1), got {value}.")
        if value is not None and args.log_snr_min is not None:
            raise SystemExit(f"error: --{name} and --log_snr_min both set the schedule; give one of them.")
    if args.beta_start is not None and args.beta_end is not None and not args.beta_start < args.beta_end:
        raise SystemExit(f"error: --beta_start must be below --beta_end, got {args.beta_start} and {args.beta_end}.")
    if args.log_snr_head_steps is not None and args.log_snr_prefix_steps is not None:
        raise SystemExit("error: --log_snr_head_steps and --log_snr_prefix_steps both add a high-SNR end; give one.")
    if args.log_snr_prefix_steps is not None:
        if args.log_snr_max is None or args.log_snr_min is not None:
            raise SystemExit("error: --log_snr_prefix_steps needs --log_snr_max and no --log_snr_min.")
        if not args.log_snr_prefix_steps > 0:
            raise SystemExit(f"error: --log_snr_prefix_steps must be positive, got {args.log_snr_prefix_steps}.")
    elif args.log_snr_head_steps is not None:
        if args.log_snr_max is None or args.log_snr_min is not None:
            raise SystemExit("error: --log_snr_head_steps needs --log_snr_max and no --log_snr_min.")
        if not 0 < args.log_snr_head_steps < args.num_train_timesteps:
            raise SystemExit(f"error: --log_snr_head_steps must lie in (0, --num_train_timesteps "
                             f"{args.num_train_timesteps}), got {args.log_snr_head_steps}.")
    elif (args.log_snr_max is None) != (args.log_snr_min is None):
        raise SystemExit("error: give --log_snr_max and --log_snr_min together (or --log_snr_head_steps / --log_snr_prefix_steps).")
    if args.log_snr_min is not None and not args.log_snr_max > args.log_snr_min:
        raise SystemExit(f"error: --log_snr_max must exceed --log_snr_min, got {args.log_snr_max} and "
                         f"{args.log_snr_min}.")
    if not 0 <= args.class_dropout_prob < 1:
        raise SystemExit(f"error: --class_dropout_prob must lie in [0, 1), got {args.class_dropout_prob}.")
    if args.learning_rate <= 0:
        raise SystemExit(f"error: --learning_rate must be positive, got {args.learning_rate}.")
    source = args.pretrained_model_name_or_path
    if source and not Path(source).expanduser().exists() and looks_like_a_path(source):
        exit_with_usage_error(f"--pretrained_model_name_or_path {source!r}: no such folder (and not a Hub id)")
    if args.num_inference_steps is None:
        args.num_inference_steps = default_num_inference_steps(args.sampler)
    if args.max_train_steps is None and args.num_epochs is None:
        args.max_train_steps = 2000


def build_unet(args: argparse.Namespace, num_classes: int | None = None) -> DDPMFromScratchUNet:
    """The network to train: pretrained weights as they are, or a fresh preset/config (widened to 2×C outputs
    for a loss that learns the variance; with ``num_classes``, a class embedding of the classes and ∅)."""
    if args.pretrained_model_name_or_path:
        source = Path(args.pretrained_model_name_or_path)
        subfolder = "unet" if (source / "unet").is_dir() or not source.exists() else None
        unet = DDPMFromScratchUNet.from_pretrained(args.pretrained_model_name_or_path, subfolder=subfolder)
        rows = unet.config.get("num_class_embeds")
        wanted = None if num_classes is None else num_classes + 1
        if rows != wanted:
            needs = "no class embedding" if wanted is None else f"{num_classes} classes and the null label"
            raise ValueError(f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path!r} has "
                             f"num_class_embeds={rows}, but this run needs {wanted} ({needs})")
        return unet
    if args.model_config in PRESETS:
        config = dict(PRESETS[args.model_config])
    else:
        config_path = Path(args.model_config)
        if not config_path.is_file():
            raise SystemExit(
                f"error: --model_config {args.model_config!r} is neither a preset ({', '.join(PRESETS)}) nor a file."
            )
        config = json.loads(config_path.read_text())
    if args.fourier_features is not None:
        config["fourier_feature_exponents"] = list(args.fourier_features)
    if variance_type_for_loss(args.loss) is not None:
        config["out_channels"] = 2 * config.get("in_channels", 3)
    if num_classes is not None:
        config["num_class_embeds"] = num_classes + 1
    return DDPMFromScratchUNet.from_config(config)


def build_noise_scheduler(args: argparse.Namespace) -> DDPMFromScratchScheduler:
    overrides = {}
    if variance_type_for_loss(args.loss) is not None:
        overrides["variance_type"] = variance_type_for_loss(args.loss)
    if args.pretrained_model_name_or_path and (Path(args.pretrained_model_name_or_path) / "scheduler").is_dir():
        return DDPMFromScratchScheduler.from_pretrained(args.pretrained_model_name_or_path, subfolder="scheduler",
                                                        **overrides)
    linear = {name: getattr(args, name) for name in ("beta_start", "beta_end") if getattr(args, name) is not None}
    num_train_timesteps = args.num_train_timesteps
    if args.log_snr_prefix_steps is not None:
        try:
            overrides["trained_betas"] = high_snr_prefix_betas(
                args.num_train_timesteps, args.log_snr_max, args.log_snr_prefix_steps, **linear).tolist()
        except ValueError as error:
            raise SystemExit(f"error: --log_snr_max: {error}.") from None
        num_train_timesteps += args.log_snr_prefix_steps
    elif args.log_snr_head_steps is not None:
        try:
            overrides["trained_betas"] = high_snr_head_betas(
                args.num_train_timesteps, args.log_snr_max, args.log_snr_head_steps, **linear).tolist()
        except ValueError as error:
            raise SystemExit(f"error: --log_snr_max: {error}.") from None
    elif args.log_snr_max is not None:
        overrides["trained_betas"] = log_snr_linear_betas(
            args.num_train_timesteps, args.log_snr_max, args.log_snr_min).tolist()
    if args.log_snr_min is None:  # the linear schedule's ends; with trained_betas they only record where β came from
        overrides.update(linear)
    scheduler = DDPMFromScratchScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        **overrides,
    )
    # ᾱ is float32 (as in diffusers): near 1 it resolves steps of 6e-8 only, and a β below that makes two
    # consecutive ᾱ equal (or ᾱ_1 = 1), a step with β' = 0 whose log-variance is −∞.
    alphas_cumprod = scheduler.alphas_cumprod
    if not (bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all()) and alphas_cumprod[0] < 1):
        if args.log_snr_max is not None:
            raise SystemExit(f"error: --log_snr_max {args.log_snr_max} with {num_train_timesteps} timesteps gives "
                             "steps of ᾱ below float32's resolution near 1 (two equal ᾱ_t); use a lower --log_snr_max "
                             "(≤ 13 for 1000 steps down to -10) or fewer timesteps.")
        raise SystemExit(f"error: --beta_start {scheduler.config.beta_start} gives steps of ᾱ below float32's resolution "
                         "near 1 (two equal ᾱ_t); use a larger --beta_start (≥ 1e-6).")
    return scheduler


def log_snr_prefix_steps(args: argparse.Namespace) -> int:
    """N of the chain's high-SNR prefix, which the saved pipeline's samplers step past: the flag's, or for a
    pretrained pipeline whose scheduler the run keeps, the one in its model_index.json."""
    pretrained = Path(args.pretrained_model_name_or_path or "")
    if args.pretrained_model_name_or_path and (pretrained / "scheduler").is_dir():
        index = pretrained / "model_index.json"
        return json.loads(index.read_text()).get("log_snr_prefix_steps", 0) if index.is_file() else 0
    return args.log_snr_prefix_steps or 0


def noise_schedule_description(args: argparse.Namespace, scheduler) -> str:
    """The noise schedule in words, for the model card (a schedule given as trained_betas says how it was built)."""
    config = scheduler.config
    linear = f"linear (β {config.beta_start:g} → {config.beta_end:g})"
    if args.pretrained_model_name_or_path:
        return config.beta_schedule if config.trained_betas is None else "trained_betas of the pretrained scheduler"
    if args.log_snr_prefix_steps is not None:
        return (f"{linear} after a high-SNR prefix of {args.log_snr_prefix_steps} steps from log SNR "
                f"{args.log_snr_max:g}, which samplers step past")
    if args.log_snr_head_steps is not None:
        return f"{linear}, its first {args.log_snr_head_steps} steps falling linearly in log SNR from {args.log_snr_max:g}"
    if args.log_snr_max is not None:
        return f"linear in log SNR from {args.log_snr_max:g} to {args.log_snr_min:g}"
    return config.beta_schedule


def sample_grid(unet, noise_scheduler, num_images: int, num_inference_steps: int, sampler: str = "ddpm",
                grid_scale: int | None = None, num_classes: int | None = None, log_snr_prefix_steps: int = 0):
    """A grid of samples with a fixed seed, so grids from different steps are comparable; for a class-conditional
    model one row per class (at guidance scale 1), ``num_images // num_classes`` images each."""
    pipeline = DDPMFromScratchPipeline(unet=unet, scheduler=scheduler_for(sampler, noise_scheduler.config),
                                       log_snr_prefix_steps=log_snr_prefix_steps)
    pipeline.set_progress_bar_config(disable=True)
    labels, rows = None, None
    if num_classes is not None:
        per_class = max(1, num_images // num_classes)
        labels, rows, num_images = [c for c in range(num_classes) for _ in range(per_class)], num_classes, \
            per_class * num_classes
    images = pipeline(
        batch_size=num_images,
        generator=torch.Generator(device="cpu").manual_seed(GRID_SEED),
        num_inference_steps=num_inference_steps,
        output_type="np",
        class_labels=labels,
    ).images
    return image_grid(pipeline.numpy_to_pil(images), scale=grid_scale, rows=rows), images


def training_config(args: argparse.Namespace) -> TrainingConfig:
    """The loop's settings from the flags of the same names."""
    names = [f.name for f in dataclasses.fields(TrainingConfig)]
    settings = {name: getattr(args, name) for name in names if hasattr(args, name)}
    settings["resume_from"] = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    return TrainingConfig(**{**settings, "output_dir": Path(args.output_dir)})


def as_training_batches(args: argparse.Namespace, dataset, unet: DDPMFromScratchUNet, resolution: int):
    """The training images as the loop's ``{"input": (C, H, W) in [−1, 1]}`` (and ``"class_labels"``)."""
    transform = build_transform(resolution, unet.config.in_channels, center_crop=args.center_crop)
    if args.class_conditional:
        return with_image_and_label_transform(dataset, transform, args.image_column, args.label_column)
    return with_image_transform(dataset, transform, args.image_column)


def main(argv=None) -> dict:
    args = parse_args(argv)
    # Rank 0 holds the folder's lock for the whole run; the other ranks wait for it at the accelerator's first
    # barrier (and are torn down with it when it is refused).
    if int(os.environ.get("RANK", "0")) != 0:
        return train(args)
    with RunLock(args.output_dir):
        check_fresh_run(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
        return train(args)


def train(args: argparse.Namespace) -> dict:
    started = time.time()
    output_dir = Path(args.output_dir)

    # Everything that can be refused is checked before the accelerator starts.
    dataset = load_image_dataset(dataset_name=args.dataset_name, train_data_dir=args.train_data_dir,
                                 image_column=args.image_column, cache_dir=args.cache_dir)
    names = class_names(dataset, args.label_column) if args.class_conditional else None
    torch.manual_seed(args.seed)  # the initial weights: every rank builds the same model from --seed
    unet = build_unet(args, None if names is None else len(names))
    noise_scheduler = build_noise_scheduler(args)
    check_model_for_loss(unet, noise_scheduler, args.loss)
    timestep_sampler = create_timestep_sampler(args.timestep_sampler, noise_scheduler.config.num_train_timesteps)
    resolution = args.resolution or unet.config.sample_size
    check_resolution(resolution, len(unet.config.channel_multipliers) - 1)
    dataset = as_training_batches(args, dataset, unet, resolution)
    config = training_config(args)

    accelerator = build_accelerator(config, args.mixed_precision, None if args.logger == "none" else args.logger,
                                    args.num_threads)
    accelerator.wait_for_everyone()  # rank 0 has the lock and a clean folder
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)
        logging.getLogger("ddpm_from_scratch").setLevel(logging.WARNING)
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)
    if args.compile:
        compile_for_training(unet)
    if accelerator.is_main_process:
        (output_dir / "samples").mkdir(parents=True, exist_ok=True)
        if args.logger != "none":
            accelerator.init_trackers("train", config=tracker_hyperparameters(args))

    def save_grid(step: int, model) -> None:
        grid, images = sample_grid(model, noise_scheduler, args.num_grid_images, args.num_inference_steps,
                                   args.sampler, args.grid_scale, None if names is None else len(names),
                                   log_snr_prefix_steps(args))
        grid.save(output_dir / "samples" / f"step-{step}.png")
        if args.logger == "tensorboard":
            accelerator.get_tracker("tensorboard", unwrap=True).add_images("samples", images, step,
                                                                           dataformats="NHWC")

    loss_fn = denoising_loss(noise_scheduler, args.loss, args.vlb_weight, args.class_dropout_prob,
                             unet.null_class_label)
    result = train_loop(
        unet, loss_fn, dataset, config, accelerator,
        timestep_sampler, augment=random_horizontal_flip if args.random_flip else None,
        hooks=(Hook(args.save_images_steps, save_grid),),
    )
    if accelerator.is_main_process:
        write_run_outputs(args, accelerator, result, noise_scheduler, resolution, time.time() - started, names)
    accelerator.end_training()
    return {
        "process_index": accelerator.process_index,
        "global_step": result.global_step,
        "final_loss": result.final_loss,
        "weights_sha256": weights_digest(result.raw_model),
        "timestep_sampler_sha256": hashlib.sha256(json.dumps(timestep_sampler.state_dict()).encode()).hexdigest(),
        "images_seen": result.images_seen,
        "pixel_sum": result.pixel_sum,
    }


def tracker_hyperparameters(args: argparse.Namespace) -> dict:
    """The flags as TensorBoard's hparams: never the token; a list option as its text (hparams take scalars)."""
    return {k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            for k, v in vars(args).items() if v is not None and k != "hub_token"}


def write_run_outputs(args: argparse.Namespace, accelerator, result: TrainingResult, noise_scheduler,
                      resolution: int, wall: float, names: list[str] | None = None) -> None:
    """The run's pipeline, model card, evaluation and Hub upload (main process)."""
    output_dir = Path(args.output_dir)
    final_unet = result.model
    id2label = None if names is None else dict(enumerate(names))
    DDPMFromScratchPipeline(unet=final_unet, scheduler=noise_scheduler, id2label=id2label,
                            log_snr_prefix_steps=log_snr_prefix_steps(args)).save_pretrained(output_dir)
    grid_path = output_dir / "samples" / f"step-{result.global_step}.png"
    facts = {
        "dataset": args.dataset_name or args.train_data_dir or "UCI digits (scikit-learn), training split",
        "model_config": args.pretrained_model_name_or_path or args.model_config,
        "num_parameters": f"{sum(p.numel() for p in result.raw_model.parameters()):,}",
        "resolution": resolution,
        "channels": final_unet.config.in_channels,
        "train_steps": result.global_step,
        "batch_size": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate,
        "mixed_precision": accelerator.mixed_precision,
        "ema": "yes" if args.use_ema else "no",
        "wall_time": f"{wall / 60:.1f} min",
        "final_loss": f"{result.final_loss:.4f}",
        "sample_grid": grid_path.relative_to(output_dir).as_posix(),
        "num_train_timesteps": noise_scheduler.config.num_train_timesteps,
        "beta_schedule": noise_schedule_description(args, noise_scheduler),
        "predicts": "the noise ε and its variance" if variance_type_for_loss(args.loss) else "the noise ε",
        "loss": LOSS_DESCRIPTIONS[args.loss].format(vlb_weight=args.vlb_weight),
        "variance": VARIANCE_DESCRIPTIONS.get(noise_scheduler.config.variance_type,
                                              noise_scheduler.config.variance_type),
        "timestep_sampler": args.timestep_sampler,
        "classes": "none (unconditional)" if names is None else (
            f"{len(names)}, with classifier-free guidance (null label dropped in with p = {args.class_dropout_prob}):"
            f" {', '.join(f'{i} = {name}' for i, name in enumerate(names))}"),
        "repo_id": args.hub_model_id or output_dir.name,
    }
    (output_dir / "README.md").write_text(render_model_card(MODEL_CARD_TEMPLATE.read_text(), facts))
    if args.evaluate and not args.dataset_name:  # a Hub/saved dataset has no image folder to evaluate on
        evaluate_folder(
            str(output_dir), update_card=True, data_dir=args.train_data_dir,
            num_bound_images=args.eval_num_bound_images, num_samples=args.eval_num_samples,
            sampler=args.sampler, num_inference_steps=args.num_inference_steps, seed=args.seed, progress=False,
        )
    if args.push_to_hub:
        commit = push_pipeline_folder(output_dir, args.hub_model_id, token=args.hub_token,
                                      private=args.hub_private_repo)
        logger.info("Pushed to the Hub: %s", commit)
    print(
        f"Done: {result.global_step} steps in {wall / 60:.1f} min, final loss {result.final_loss:.4f}. "
        f"Pipeline and model card in {output_dir}/, samples in {output_dir}/samples/, "
        f"checkpoints in {output_dir}/checkpoint-*/, TensorBoard logs in {output_dir}/logs/."
    )


def weights_digest(module: torch.nn.Module) -> str:
    """A digest of the raw weights, to check that every rank ends with the same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


if __name__ == "__main__":
    try:
        main()
    except (FloatingPointError, FileNotFoundError, ValueError, HubUploadError, RunFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
