"""The training loop every model of the package trains with: `scripts/train.py`'s U-Nets and the toy problems.

One optimiser step is `gradient_accumulation_steps` micro-batches. Each micro-batch is drawn in an order that
depends only on (seed, epoch) and scored by a *loss function*, ``loss_fn(model, original_samples, generator,
timestep_sampler) -> BatchLoss`` (`step.batch_loss` for images; the toy problems' `toy.training` losses), whose
every random draw comes from a generator seeded by `step.step_seed` for that micro-batch. So a run resumed from a
checkpoint draws exactly what an uninterrupted one would: its weights end bit for bit the same, and a SIGKILL loses
at most the steps since the last checkpoint (`checkpoints.save_checkpoint` writes atomically).

Around the loss: accelerate (several processes, gradient accumulation, mixed precision, logging), AdamW with one
of diffusers' learning-rate schedules stepped once per optimiser step, gradient clipping, diffusers' `EMAModel`,
a loss-aware timestep sampler that every rank updates with every rank's losses, and hooks (sample grids,
held-out bounds) that see the averaged weights every so many steps.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .checkpoints import EMA_FOLDER, read_training_state, remove_stale_temporaries, save_checkpoint
from .step import BatchLoss, all_finite, step_seed
from .timestep_sampling import UniformSampler

logger = logging.getLogger(__name__)

LossFunction = Callable[[torch.nn.Module, torch.Tensor, torch.Generator, UniformSampler], BatchLoss]


@dataclass
class TrainingConfig:
    """What the loop does, with `scripts/train.py`'s defaults (its ``--help`` documents each flag of the same name).

    Attributes:
        output_dir: where checkpoints go (``checkpoint-N``); None writes none.
        seed: every draw of the run (data order, timesteps, noise, dropout) derives from it.
        train_batch_size: micro-batch size per process.
        max_train_steps: optimiser steps; None: ``num_epochs`` epochs.
        num_epochs: used when ``max_train_steps`` is None.
        drop_last: drop each epoch's last, smaller micro-batch.
        gradient_accumulation_steps: micro-batches per optimiser step.
        learning_rate, lr_scheduler, lr_warmup_steps: the peak rate and a schedule name that diffusers'
            `get_scheduler` knows, warm-up and length counted in optimiser steps.
        adam_beta1, adam_beta2, adam_weight_decay: AdamW's.
        max_grad_norm: clip the gradient's norm to this; None does not clip.
        use_ema: keep diffusers' `EMAModel` of the weights; the hooks and the result see the average.
        ema_max_decay, ema_warmup, ema_inv_gamma, ema_power: the EMA's decay, at most ``ema_max_decay``; with
            ``ema_warmup`` it grows as 1 − (1 + step/inv_gamma)^−power, otherwise as (1 + step)/(10 + step).
        checkpointing_steps: write a checkpoint every this many optimiser steps and after the last; None: never.
        checkpoints_total_limit: keep only this many newest checkpoints.
        resume_from: a checkpoint folder to resume from.
        dataloader_num_workers: worker processes of the data loader.
        progress: show a progress bar on the local main process.
    """

    output_dir: Optional[Path] = None
    seed: int = 0
    train_batch_size: int = 128
    max_train_steps: Optional[int] = None
    num_epochs: Optional[int] = None
    drop_last: bool = False
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 100
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    use_ema: bool = True
    ema_max_decay: float = 0.9999
    ema_warmup: bool = True
    ema_inv_gamma: float = 1.0
    ema_power: float = 3 / 4
    checkpointing_steps: Optional[int] = None
    checkpoints_total_limit: Optional[int] = None
    resume_from: Optional[Path] = None
    dataloader_num_workers: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.max_train_steps is None and self.num_epochs is None:
            raise ValueError("TrainingConfig needs max_train_steps or num_epochs")
        for name in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "num_epochs",
                     "checkpointing_steps", "checkpoints_total_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"TrainingConfig.{name} must be a positive integer, got {value!r}")
        if self.checkpointing_steps and self.output_dir is None:
            raise ValueError("TrainingConfig.checkpointing_steps needs an output_dir to write the checkpoints to")


@dataclass
class Hook:
    """``fn(global_step, model)`` every `every` optimiser steps and after the last, with the averaged weights."""

    every: int
    fn: Callable[[int, torch.nn.Module], None]
    main_process_only: bool = True


@dataclass
class TrainingResult:
    """What a run ends with.

    Attributes:
        model: the weights to keep (the EMA's average, or the raw weights without EMA), a module of its own.
        raw_model: the optimised weights themselves (unwrapped from accelerate).
        global_step: optimiser steps taken in total (resumed steps included).
        losses: the loss of each optimiser step this process ran, mean over the processes.
        images_seen, pixel_sum: this process's share of the data, to check sharding.
    """

    model: torch.nn.Module
    raw_model: torch.nn.Module
    global_step: int
    losses: list[float] = field(default_factory=list)
    images_seen: int = 0
    pixel_sum: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


class EpochPermutationSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class TensorSamples(torch.utils.data.Dataset):
    """Rows of a tensor as the loop's batches, ``{"input": row}`` (the toy problems' data)."""

    def __init__(self, samples: torch.Tensor):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input": self.samples[index]}


def cpu_threads_per_process() -> int:
    """This process's share of the cores it may run on, one share per local process."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, len(os.sched_getaffinity(0)) // local_processes)


def build_accelerator(config: TrainingConfig, mixed_precision: Optional[str] = None, log_with: Optional[str] = None,
                      num_threads: Optional[int] = None, cpu: Optional[bool] = None) -> Accelerator:
    """The accelerator of a run, logging under ``output_dir/logs``; on a CPU it gets its share of the cores.

    ``cpu`` None: the CPU when there is no GPU. Several processes without a GPU need it said explicitly:
    accelerate only picks torch.distributed over gloo when told it is on the CPU; otherwise each process
    would train alone, unaware of the others.
    """
    if cpu is None:
        cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    project = None
    if config.output_dir is not None:
        output_dir = Path(config.output_dir)
        project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs"))
    accelerator = Accelerator(cpu=cpu, gradient_accumulation_steps=config.gradient_accumulation_steps,
                              mixed_precision=mixed_precision, log_with=log_with, project_config=project)
    if num_threads or accelerator.device.type == "cpu":
        torch.set_num_threads(num_threads or cpu_threads_per_process())
    return accelerator


def averaged_copy(model: torch.nn.Module, ema: Optional[EMAModel]) -> torch.nn.Module:
    """A new module of `model`'s class and config holding the EMA's weights (`model` itself without EMA)."""
    if ema is None:
        return model
    copy = type(model).from_config(model.config)
    ema.copy_to(copy.parameters())
    return copy.to(next(model.parameters()).device)


def train_loop(model, loss_fn: LossFunction, dataset: torch.utils.data.Dataset, config: TrainingConfig,
               accelerator: Accelerator, timestep_sampler: UniformSampler,
               augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None,
               hooks: tuple[Hook, ...] = ()) -> TrainingResult:
    """Train `model` on `dataset`'s ``"input"`` for ``config.max_train_steps`` optimiser steps (see the module).

    Args:
        model: a diffusers `ModelMixin` (``from_config``, ``config``), with the initial weights.
        loss_fn: scores one micro-batch; its `BatchLoss.loss` is back-propagated.
        dataset: items are dicts with ``"input"``, the clean samples, and any other fields ``loss_fn`` takes by
            name (``"class_labels"``).
        accelerator: from `build_accelerator` (or your own, with the same gradient accumulation).
        timestep_sampler: passed to ``loss_fn``; a loss-aware one learns from every rank's losses and is
            checkpointed with the run.
        augment: ``augment(batch, generator)`` before scoring, drawing from the micro-batch's generator
            (e.g. `data.images.random_horizontal_flip`).
        hooks: run after the optimiser steps they name, with the EMA's weights.

    Raises:
        FloatingPointError: a non-finite loss on any rank, or non-finite weights at a checkpoint; nothing is
            written then.
    """
    output_dir = None if config.output_dir is None else Path(config.output_dir)
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=config.train_batch_size, sampler=EpochPermutationSampler(len(dataset), config.seed),
        num_workers=config.dataloader_num_workers, drop_last=config.drop_last,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        fused=True,  # one kernel for all parameters: 4× faster than the per-tensor loop on a small CPU model
    )
    ema = None
    if config.use_ema:
        ema = EMAModel(
            model.parameters(), decay=config.ema_max_decay, use_ema_warmup=config.ema_warmup,
            inv_gamma=config.ema_inv_gamma, power=config.ema_power, model_cls=type(model), model_config=model.config,
            foreach=True,
        )
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    unwrapped = accelerator.unwrap_model(model)
    if ema is not None:
        ema.to(accelerator.device)  # the averaged weights live beside the weights they average

    # The LR schedule is stepped by hand once per optimiser step, so warm-up and length
    # count optimiser steps whatever the accumulation or the number of processes.
    steps_per_epoch = math.ceil(len(dataloader) / config.gradient_accumulation_steps)
    max_train_steps = config.max_train_steps or config.num_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=max_train_steps)

    global_step = 0
    if config.resume_from is not None:
        resume_from = Path(config.resume_from)
        accelerator.load_state(str(resume_from))
        state = read_training_state(resume_from)
        global_step = state["global_step"]
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if "timestep_sampler" in state:
            timestep_sampler.load_state_dict(state["timestep_sampler"])
        if ema is not None:
            loaded = EMAModel.from_pretrained(str(resume_from / EMA_FOLDER), model_cls=type(unwrapped))
            ema.load_state_dict(loaded.state_dict())
        logger.info("Resumed from %s at step %d", resume_from, global_step)
    if output_dir is not None and accelerator.is_main_process:
        remove_stale_temporaries(output_dir)

    logger.info(
        "%d samples, %d processes × batch %d × accumulation %d, %d steps (%d epochs), %s parameters",
        len(dataset), accelerator.num_processes, config.train_batch_size, config.gradient_accumulation_steps,
        max_train_steps, num_epochs, f"{sum(p.numel() for p in unwrapped.parameters()):,}",
    )
    progress = tqdm(total=max_train_steps, initial=global_step, desc="train", mininterval=1.0,
                    disable=not (config.progress and accelerator.is_local_main_process))
    micro_batches_per_epoch = len(dataloader)
    first_epoch = global_step // steps_per_epoch
    skip = (global_step % steps_per_epoch) * config.gradient_accumulation_steps
    result = TrainingResult(model=unwrapped, raw_model=unwrapped, global_step=global_step)
    pixel_sum = torch.zeros((), dtype=torch.float64)

    def write_checkpoint():
        if not all_finite(unwrapped):
            raise FloatingPointError(f"non-finite weights at step {global_step}; no checkpoint written.")
        state = {"global_step": global_step, "lr_scheduler": lr_scheduler.state_dict(),
                 "timestep_sampler": timestep_sampler.state_dict()}
        path = save_checkpoint(accelerator, output_dir, global_step, ema, config.checkpoints_total_limit,
                               extra_state=state)
        logger.info("Saved %s", path)

    model.train()
    for epoch in range(first_epoch, num_epochs):
        batches = accelerator.skip_first_batches(dataloader, skip) if epoch == first_epoch and skip else dataloader
        # Through the loader, not the sampler: accelerate's loaders re-set the sampler's epoch from
        # their own counter when iterated, and a freshly made skipping loader's counter starts at 0.
        batches.set_epoch(epoch)
        for index, batch in enumerate(batches, start=skip if epoch == first_epoch else 0):
            seed = step_seed(config.seed, epoch * micro_batches_per_epoch + index, accelerator.process_index)
            generator = torch.Generator(device=accelerator.device).manual_seed(seed)
            torch.manual_seed(seed)  # dropout draws from the global generator
            clean = batch["input"]
            result.images_seen += clean.shape[0]
            pixel_sum += clean.double().sum().cpu()
            if augment is not None:
                clean = augment(clean, generator)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    # The batch's other fields (a class-conditional run's "class_labels") go to the loss by name.
                    extras = {key: value for key, value in batch.items() if key != "input"}
                    scored = loss_fn(model, clean, generator, timestep_sampler, **extras)
                loss = scored.loss
                # Every rank sees every rank's loss, so all stop together on a non-finite one.
                losses = accelerator.gather(loss.detach().reshape(1))
                if not torch.isfinite(losses).all():
                    raise FloatingPointError(
                        f"non-finite loss {losses.tolist()} at step {global_step + 1}: stopping without writing "
                        "a checkpoint. Lower the learning rate (--learning_rate) or train in bf16 or full precision "
                        "(--mixed_precision bf16/no)."
                    )
                if type(timestep_sampler) is not UniformSampler:
                    # Every rank records every rank's losses in rank order: the histories stay identical.
                    timestep_sampler.update(accelerator.gather(scored.timesteps),
                                            accelerator.gather(scored.per_sample))
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue

            lr_scheduler.step()
            if ema is not None:
                ema.step(unwrapped.parameters())
            global_step += 1
            loss_value = losses.mean().item()
            result.losses.append(loss_value)
            lr = lr_scheduler.get_last_lr()[0]
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
            logs = {"loss": loss_value, "lr": lr}
            logs.update({name: values.mean().item() for name, values in scored.terms.items()})
            if ema is not None:
                logs["ema_decay"] = ema.cur_decay_value
            accelerator.log(logs, step=global_step)

            last = global_step == max_train_steps
            if output_dir is not None and config.checkpointing_steps and (
                global_step % config.checkpointing_steps == 0 or last
            ):
                write_checkpoint()
            for hook in hooks:
                if (global_step % hook.every == 0 or last) and (accelerator.is_main_process or not hook.main_process_only):
                    was_training = unwrapped.training
                    averaged = averaged_copy(unwrapped, ema)
                    averaged.eval()  # no dropout while sampling
                    hook.fn(global_step, averaged)
                    unwrapped.train(was_training)
            if global_step >= max_train_steps:
                break
        skip = 0
        if global_step >= max_train_steps:
            break
    progress.close()
    accelerator.wait_for_everyone()
    result.global_step = global_step
    result.model = averaged_copy(unwrapped, ema)
    result.pixel_sum = pixel_sum.item()
    return result
