"""benchmarks/run.py in its tiny --quick mode: every section is there, with positive numbers,
and the two sampling pipelines produce the same images."""

import json
import math
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "run.py"
SIDES = ("ours", "theirs")


def positive(stats: dict) -> bool:
    return stats["n"] >= 1 and all(stats[k] > 0 for k in ("median", "min", "max", "q1", "q3"))


def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--warmup", "0", "--device", "cpu",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())

    for section in ("ceiling", "training", "sampling", "scheduler_step", "memory"):
        assert results[section], section

    assert {c["library"] for c in results["ceiling"].values()} == {"blas", "onednn"}  # both matrix products
    for ceiling in results["ceiling"].values():
        assert ceiling["n"] > 0 and ceiling["dtype"] == "float32"
        assert positive(ceiling["gflops"]) and positive(ceiling["gflops_end"])

    assert len(results["training"]) == 2
    for run in results["training"]:
        assert positive(run["ratio"])
        for side in SIDES:
            assert positive(run[side]["images_per_s"]) and positive(run[side]["gflops"])
            assert run[side]["flops_per_step"] > 0 and run[side]["fraction_of_ceiling"] > 0
        assert run["ours"]["flops_per_step"] == run["theirs"]["flops_per_step"]  # same architecture

    assert len(results["sampling"]) == 2
    for run in results["sampling"]:
        assert positive(run["ratio"])
        assert all(positive(run[side]["images_per_s"]) and positive(run[side]["gflops"]) for side in SIDES)
        assert run["flops_per_step"] > 0
        assert run["match"] is True and 0 <= run["max_abs_diff"] <= 1e-3

    step = results["scheduler_step"]
    assert positive(step["speedup"]) and all(positive(step[side]["us_per_call"]) for side in SIDES)

    entries = results["memory"]["entries"]
    assert len(entries) == 5  # 2 training, 2 sampling, 1 scheduler
    for entry in entries:
        for side in SIDES:
            assert "error" not in entry[side], entry
            assert entry[side]["peak_rss_mib"] > 0 and entry[side]["baseline_mib"] > 0
    for entry in entries[:2]:  # training: gradients, optimiser state and activations at least
        assert all(entry[side]["delta_mib"] > 0 for side in SIDES), entry

    table = results["table"]
    assert "| digits" in table and "NO (>" not in table
    assert table.strip() in proc.stdout


def test_quick_benchmark_runs_the_opt_in_sampling_paths(tmp_path):
    # Our frozen, compiled U-Net against diffusers' eager one, both timed under bf16 autocast; the images are
    # then checked in float32 (the compiled U-Net recompiles for it), the bf16 difference kept for information.
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--warmup", "1", "--device", "cpu",
         "--sections", "sampling", "--compile", "ours", "--mixed_precision", "bf16", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["machine"]["compile"] == "ours" and results["machine"]["precision"] == "bf16 autocast"
    assert {c["dtype"] for c in results["ceiling"].values()} == {"float32", "bfloat16"}
    assert "training" not in results and "memory" not in results
    for run in results["sampling"]:
        assert run["ceiling_dtype"] == "bfloat16" and positive(run["ratio"])
        assert run["match"] is True and run["max_abs_diff"] <= 1e-3
        assert run["max_abs_diff_bf16"] > run["max_abs_diff"]  # bf16 really was on
    assert "ours compiled (theirs eager)" in results["table"]


def test_bound_variances_benchmark_writes_every_row(tmp_path, tiny_pipeline_dir, monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # its sibling imports, as running it as a script provides
    spec = importlib.util.spec_from_file_location("bound_variances_digits", BENCHMARKS / "bound_variances_digits.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    output = tmp_path / "bounds.json"
    benchmark.main([f"tiny={tiny_pipeline_dir}", "--json", str(output), "--steps", "5,50", "--fid_steps", "5",
                    "--num_samples", "20", "--gamma_images", "4"])
    record = json.loads(output.read_text())["runs"]["tiny"]
    variances = ("fixed_small", "fixed_large", "analytic_norm", "analytic_norm_optimal", "analytic", "analytic_optimal")
    assert set(record["bits_per_dim"]) == {f"{v}:{k}" for v in variances for k in (5, 50)}
    assert set(record["classifier_fid"]) == {"fixed_small:5", "fixed_large:5", "analytic:5", "analytic_optimal:5",
                                             "dpm-solver:25"}
    # The full-length chain is the same for every σ*² chain choice, and the bound is finite everywhere.
    assert record["bits_per_dim"]["analytic:50"] == {**record["bits_per_dim"]["analytic_optimal:50"],
                                                      "seconds": record["bits_per_dim"]["analytic:50"]["seconds"]}
    assert all(math.isfinite(row["bits_per_dim"]) for row in record["bits_per_dim"].values())


def test_schedule_end_benchmark_scores_a_prefixed_pipeline_as_it_samples_and_on_the_whole_chain(tmp_path, monkeypatch):
    import importlib.util

    import torch

    from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
    from ddpm_from_scratch.schedulers.log_snr_schedules import high_snr_prefix_betas

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("schedule_end_digits", BENCHMARKS / "schedule_end_digits.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    torch.manual_seed(0)
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8, channel_multipliers=(1, 2),
                               num_res_blocks=1, attention_levels=(1,), norm_num_groups=4)
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=105,
                                         trained_betas=high_snr_prefix_betas(100, 13, 5).tolist())
    variant = "prefix50-fourier4-5"
    DDPMFromScratchPipeline(unet=unet, scheduler=scheduler, log_snr_prefix_steps=5).save_pretrained(tmp_path / variant)
    output = tmp_path / "schedule_end.json"
    benchmark.main(["--phase", "evaluate", "--runs_dir", str(tmp_path), "--variants", variant, "--json", str(output),
                    "--num_samples", "20", "--batch_size", "20"])
    record = json.loads(output.read_text())["runs"][variant]
    assert math.isfinite(record["bound"]["bits_per_dim"])
    assert set(record["sample_quality"]) == {"default", "whole chain"}
    assert min(record["sample_quality"]["whole chain"]["timesteps"]) < 5  # the whole chain reaches into the prefix
