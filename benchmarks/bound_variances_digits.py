#!/usr/bin/env python
"""The bound and sample quality of trained digit models under each reverse variance, on every chain length.

    python benchmarks/bound_variances_digits.py NAME=PIPELINE [NAME=PIPELINE ...] [--json FILE]

For each pipeline (e.g. `simple=ddpm-simple hybrid=ddpm-digits`, trained by `scripts/train.py`), side by side in
one run:

- bits/dim of the bound on all 300 held-out digits (seed 0, one draw per term; the same draws for every variance,
  so differences between variances are not noise) at K = 10, 25, 50, 100, 1000 steps ('leading' spacing, as the
  sampler), for σ² = β̃ (fixed_small), σ² = β (fixed_large), the learned variance (when the network has one),
  Analytic-DPM's σ*² on the same even chain, and σ*² on the optimal trajectory of K steps, each with Γ estimated
  both ways (`analytic_variance.estimate_gamma`: Bao et al.'s E‖ε_θ‖², and the default 1 − E‖ε − ε_θ‖²);
- classifier FID of ``--num_samples`` samples (image i drawn with seed i) at K = 10, 25, 50 for the same;
- classifier FID at the default training sampler (DPM-Solver++, 25 steps) for the model as trained;
- the reference rows of the bound (uniform over the used levels, per-pixel histogram).

The network is called once per (chain timestep, noise draw): outputs are cached, since every variance shares the
mean μ_θ and so the network's input. Γ for Analytic-DPM comes from ``--gamma_images`` training digits.
Results go to ``--json`` after every row, and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch

from harness import resumable_results

STEPS = (10, 25, 50, 100, 1000)
FID_STEPS = (10, 25, 50)
VARIANCES = ("fixed_small", "fixed_large", "learned", "analytic_norm", "analytic_norm_optimal", "analytic",
             "analytic_optimal")
LABELS = {"fixed_small": "σ² = β̃", "fixed_large": "σ² = β", "learned": "learned (L_hybrid)",
          "analytic_norm": "Analytic-DPM, Γ = E‖ε_θ‖² (paper), even steps",
          "analytic_norm_optimal": "Analytic-DPM, Γ = E‖ε_θ‖² (paper), optimal steps",
          "analytic": "Analytic-DPM, Γ = 1 − E‖ε − ε_θ‖² (default), even steps",
          "analytic_optimal": "Analytic-DPM, Γ = 1 − E‖ε − ε_θ‖² (default), optimal steps"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="NAME=PIPELINE")
    p.add_argument("--json", default="benchmarks/bound_variances_digits.json")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--gamma_images", type=int, default=100)
    p.add_argument("--steps", default=",".join(map(str, STEPS)))
    p.add_argument("--fid_steps", default=",".join(map(str, FID_STEPS)))
    p.add_argument("--batch_size", type=int, default=500, help="Sampling batch.")
    p.add_argument("--fid_variances", default="fixed_small,fixed_large,learned,analytic,analytic_optimal",
                   help=f"Which of {','.join(VARIANCES)} get the classifier FID rows.")
    args = p.parse_args(argv)
    for run in args.runs:
        if "=" not in run or not Path(run.split("=", 1)[1]).is_dir():
            p.error(f"expected NAME=PIPELINE_FOLDER, got {run!r}")
    return args


class CachedNetwork(torch.nn.Module):
    """The network, memoised on its exact input: every variance's bound feeds it the same x_t for a seed."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.cache = unet, {}

    @property
    def dtype(self):
        return self.unet.dtype

    def forward(self, sample, timesteps):
        key = hashlib.blake2b(sample.detach().cpu().numpy().tobytes()
                              + torch.as_tensor(timesteps).cpu().numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.unet(sample, timesteps).sample
        return self.cache[key]


def schedulers(pipe, analytic: dict) -> dict:
    from ddpm_from_scratch import DDPMFromScratchScheduler
    from ddpm_from_scratch.schedulers.scheduling_ddpm import LEARNED_VARIANCE_TYPES

    config = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    found = {name: DDPMFromScratchScheduler.from_config({**config, "variance_type": name})
             for name in ("fixed_small", "fixed_large")}
    if pipe.scheduler.config.variance_type in LEARNED_VARIANCE_TYPES:
        found["learned"] = pipe.scheduler
    for estimator, name in (("norm", "analytic_norm"), ("error", "analytic")):
        found[name] = found[f"{name}_optimal"] = analytic[estimator]
    return found


def chain_kwargs(variance: str, steps: int, scheduler) -> dict:
    from ddpm_from_scratch.schedulers.analytic_variance import optimal_trajectory

    if variance.endswith("_optimal"):
        return {"timesteps": optimal_trajectory(scheduler, steps)}
    return {"num_inference_steps": steps}


def evaluate(name: str, folder: str, args, record: dict, save) -> None:
    from ddpm_from_scratch import DDPMFromScratchPipeline
    from ddpm_from_scratch.schedulers.analytic_variance import analytic_scheduler, estimate_gamma
    from ddpm_from_scratch.evaluation.digit_classifier import load_digits_tensors
    from ddpm_from_scratch.likelihood import variational_bound
    from ddpm_from_scratch.evaluation.metrics import digit_sample_quality
    from ddpm_from_scratch.evaluation.reference_bounds import reference_bounds
    from ddpm_from_scratch.sampling.samplers import generate

    pipe = DDPMFromScratchPipeline.from_pretrained(folder)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    train, _ = load_digits_tensors("train")
    held_out, _ = load_digits_tensors("test")
    record["pipeline"] = folder
    record["scheduler"] = {k: pipe.scheduler.config[k] for k in ("variance_type", "beta_schedule")}
    record["scheduler"]["trained_betas"] = pipe.scheduler.config.get("trained_betas") is not None
    record["references"] = reference_bounds(train, held_out)
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.gamma_images]
    analytic = {}
    for estimator in ("norm", "error"):
        started = time.time()
        gamma = estimate_gamma(pipe.unet, pipe.scheduler, train[chosen], generator=torch.Generator().manual_seed(1),
                               progress=False, estimator=estimator)
        record[f"gamma_{estimator}"] = {"seconds": time.time() - started, "values": gamma,
                                        "at_least_one": sum(g >= 1 for g in gamma)}
        analytic[estimator] = analytic_scheduler(pipe.scheduler, gamma)
    found = schedulers(pipe, analytic)
    network = CachedNetwork(pipe.unet)

    bounds = record.setdefault("bits_per_dim", {})
    for steps in (int(s) for s in args.steps.split(",")):
        for variance, scheduler in found.items():
            key = f"{variance}:{steps}"
            if key in bounds:
                continue
            started = time.time()
            kwargs = chain_kwargs(variance, steps, scheduler)
            bound = variational_bound(network, scheduler, held_out, generator=torch.Generator().manual_seed(0),
                                      progress=False, **kwargs)
            bpd = bound.bits_per_dim
            bounds[key] = {"bits_per_dim": bpd.mean().item(), "std_error": bpd.std().item() / len(bpd) ** 0.5,
                           "decoder_bits_per_dim": bound.decoder_bits_per_dim.mean().item(),
                           "prior_bits_per_dim": bound.prior_bits_per_dim.mean().item(),
                           "timesteps": bound.timesteps.tolist() if steps <= 100 else None,
                           "seconds": time.time() - started}
            save()
            print(f"{name} {key}: {bpd.mean().item():.3f} bits/dim", flush=True)
    network.cache.clear()

    quality = record.setdefault("classifier_fid", {})
    for steps in (int(s) for s in args.fid_steps.split(",")):
        for variance, scheduler in found.items():
            key = f"{variance}:{steps}"
            if key in quality or variance not in args.fid_variances.split(","):
                continue
            started = time.time()
            sampler = pipe.with_components(scheduler=scheduler)
            sampler.set_progress_bar_config(disable=True)
            kwargs = chain_kwargs(variance, steps, scheduler)
            chunks = []
            for start in range(0, args.num_samples, args.batch_size):
                count = min(args.batch_size, args.num_samples - start)
                generators = [torch.Generator().manual_seed(start + i) for i in range(count)]
                chunks.append(sampler(batch_size=count, generator=generators, output_type="pt", **kwargs).images)
            row = digit_sample_quality(torch.cat(chunks).float(), value_range=(0.0, 1.0), seed=0)
            quality[key] = {"classifier_fid": row["classifier_fid"], "kid_mean": row["kid_mean"],
                            "num_images": row["num_images"], "seconds": time.time() - started}
            save()
            print(f"{name} {key}: classifier FID {row['classifier_fid']:.3f}", flush=True)
    if "dpm-solver:25" not in quality:
        samples = generate(pipe, args.num_samples, "dpm-solver", 25, seed=0, batch_size=args.batch_size)
        row = digit_sample_quality(samples.float(), value_range=(0.0, 1.0), seed=0)
        quality["dpm-solver:25"] = {"classifier_fid": row["classifier_fid"], "kid_mean": row["kid_mean"],
                                    "num_images": row["num_images"]}
        save()


def table(results: dict) -> str:
    lines = []
    for name, record in results["runs"].items():
        refs = record.get("references", {})
        lines += [f"#### {name} (`{record.get('pipeline')}`, {record.get('scheduler')})", ""]
        if refs:
            lines += [f"References: uniform over the used levels {refs['uniform_over_used_levels']['bits_per_dim']:.3f}, "
                      f"per-pixel histogram {refs['per_pixel_histogram']['bits_per_dim']:.3f} bits/dim.", ""]
        steps = sorted({int(k.split(':')[1]) for k in record.get("bits_per_dim", {})})
        lines += ["| bits/dim | " + " | ".join(f"K = {s}" for s in steps) + " |", "|---|" + "---:|" * len(steps)]
        for variance in VARIANCES:
            cells = [record["bits_per_dim"].get(f"{variance}:{s}") for s in steps]
            if any(cells):
                lines.append(f"| {LABELS[variance]} | " + " | ".join(
                    f"{c['bits_per_dim']:.3f}" if c else "" for c in cells) + " |")
        fid_steps = sorted({int(k.split(':')[1]) for k in record.get("classifier_fid", {}) if ":" in k
                            and not k.startswith("dpm")})
        lines += ["", "| classifier FID | " + " | ".join(f"K = {s}" for s in fid_steps) + " |",
                  "|---|" + "---:|" * len(fid_steps)]
        for variance in VARIANCES:
            cells = [record["classifier_fid"].get(f"{variance}:{s}") for s in fid_steps]
            if any(cells):
                lines.append(f"| {LABELS[variance]} | " + " | ".join(
                    f"{c['classifier_fid']:.3f}" if c else "" for c in cells) + " |")
        default = record.get("classifier_fid", {}).get("dpm-solver:25")
        if default:
            lines += ["", f"Default sampler (DPM-Solver++, 25 steps): classifier FID {default['classifier_fid']:.3f}."]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results, save = resumable_results(args.json, {"runs": {}})

    for run in args.runs:
        name, folder = run.split("=", 1)
        evaluate(name, folder, args, results["runs"].setdefault(name, {}), save)
    print(table(results))


if __name__ == "__main__":
    main()
