"""The evaluation of a class-conditional digits model (issue 20, item 4) and `scripts/sample.py --class_labels`."""

import re

import pytest
import torch

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.evaluation import conditional
from ddpm_from_scratch.evaluation.digit_classifier import load_digit_classifier, load_digits_tensors, predict
from script_modules import load_script

DIGITS = {d: str(d) for d in range(10)}


def digits_pipeline(id2label=DIGITS) -> DDPMFromScratchPipeline:
    torch.manual_seed(0)
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8, channel_multipliers=(1, 2),
                               num_res_blocks=1, attention_levels=(1,), norm_num_groups=4, num_class_embeds=11).eval()
    pipe = DDPMFromScratchPipeline(unet, DDPMFromScratchScheduler(num_train_timesteps=20), id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_every_digit_is_asked_for_equally_often():
    labels = conditional.requested_labels(25, 10)
    assert [labels.count(k) for k in range(10)] == [3] * 5 + [2] * 5


def test_only_a_model_conditioned_on_the_digits_by_name_is_scored_by_the_digit_classifier():
    assert conditional.is_digit_conditional(digits_pipeline())
    assert not conditional.is_digit_conditional(digits_pipeline({d: f"class {d}" for d in range(10)}))
    assert not conditional.is_digit_conditional(digits_pipeline(None))


def test_accuracy_is_the_classifiers_agreement_with_the_digit_asked_for(monkeypatch):
    # A stand-in sampler that returns held-out digits of the class asked for: the accuracy must then be the
    # classifier's own accuracy on those digits, computed here with `predict` directly.
    images, labels = load_digits_tensors("test")
    by_class = {k: images[labels == k] for k in range(10)}

    def draw(pipeline, num_images, sampler, steps, seed, batch_size, class_labels, guidance_scale):
        return torch.stack([by_class[c][i // 10] for i, c in enumerate(class_labels)]) / 2 + 0.5

    monkeypatch.setattr(conditional, "generate", draw)
    rows = conditional.guided_sample_quality(digits_pipeline(), 40, "ddim", 3, seed=0, batch_size=40,
                                             guidance_scales=(1.0, 2.0))
    asked = torch.tensor(conditional.requested_labels(40, 10))
    shown = torch.stack([by_class[int(c)][i // 10] for i, c in enumerate(asked)])
    want = (predict(load_digit_classifier(), shown) == asked).double().mean().item()
    assert [row["guidance_scale"] for row in rows] == [1.0, 2.0]
    assert rows[0]["accuracy"] == pytest.approx(want) and want > 0.9
    assert sum(rows[0]["class_histogram"]) == 40


def test_sample_script_draws_the_classes_asked_for(tmp_path):
    pipe = digits_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    images = load_script("sample").main([str(tmp_path / "pipe"), "--class_labels", "7", "3", "--guidance_scale", "2",
                                         "--scheduler", "ddim", "--num_inference_steps", "3",
                                         "--output", str(tmp_path / "grid.png")])
    assert len(images) == 2 and (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize("flags, message", [
    (["--class_labels", "11"], r"--class_labels 11: `class_labels`: 11 is outside \[0, 10\)"),
    (["--class_labels", "seven"], "'seven' is not a class name of this model"),
    (["--class_labels", "1", "2", "--num_images", "3"], "gives 2 labels for --num_images 3"),
])
def test_sample_script_refuses_bad_labels_in_one_line(tmp_path, capsys, flags, message):
    digits_pipeline().save_pretrained(tmp_path / "pipe")
    with pytest.raises(SystemExit):
        load_script("sample").main([str(tmp_path / "pipe"), *flags])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), errors


def test_sample_script_refuses_labels_for_an_unconditional_model(tmp_path, capsys):
    torch.manual_seed(0)
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8, channel_multipliers=(1, 2),
                               num_res_blocks=1, attention_levels=(1,), norm_num_groups=4)
    DDPMFromScratchPipeline(unet, DDPMFromScratchScheduler(num_train_timesteps=20)).save_pretrained(tmp_path / "p")
    with pytest.raises(SystemExit):
        load_script("sample").main([str(tmp_path / "p"), "--guidance_scale", "3"])
    assert "--guidance_scale 3.0: " in capsys.readouterr().err
