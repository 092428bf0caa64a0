"""`scripts/train.py --class_conditional` (issue 20): labels from the digits, an image folder or a dataset column; the
saved pipeline knows its classes; resume stays bit-identical; data without usable labels is refused before any work."""

import json
import shutil

import pytest
import torch
from PIL import Image

from ddpm_from_scratch import DDPMFromScratchPipeline
from test_train import launch, reports, run_main, tiny_config, train_args, unet_weights  # noqa: F401 (fixture)

DIGITS = [str(d) for d in range(10)]


def test_a_class_conditional_run_saves_a_pipeline_that_knows_the_digits(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 4, "--save_images_steps", 4, "--checkpointing_steps", 4,
                      "--num_grid_images", 20, "--class_conditional", "--no_evaluate"), report_dir=tmp_path / "r")
    pipe = DDPMFromScratchPipeline.from_pretrained(out)
    assert pipe.unet.config.num_class_embeds == 11 and pipe.num_classes == 10
    assert pipe.id2label == dict(enumerate(DIGITS))
    assert "| classes | 10, with classifier-free guidance" in (out / "README.md").read_text()
    grid = Image.open(out / "samples" / "step-4.png")
    assert grid.size[1] > 4 * grid.size[0]  # one row per class, two images each: ten rows of two
    pipe.set_progress_bar_config(disable=True)
    images = pipe(class_labels=["7", 3], guidance_scale=2.0, num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 8, 8, 1)


def test_a_resumed_class_conditional_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_config):
    steps = ["--max_train_steps", 8, "--checkpointing_steps", 4, "--save_images_steps", 1000, "--no_evaluate",
             "--class_conditional", "--class_dropout_prob", 0.5, "--loss", "simple"]
    whole = tmp_path / "whole"
    launch(train_args(whole, tiny_config, *steps), report_dir=tmp_path / "r1")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-4", resumed / "checkpoint-4")
    launch(train_args(resumed, tiny_config, *steps, "--resume_from_checkpoint", "latest"), report_dir=tmp_path / "r2")
    assert reports(tmp_path / "r1")[0]["weights_sha256"] == reports(tmp_path / "r2")[0]["weights_sha256"]
    expected, got = unet_weights(whole), unet_weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_labels_come_from_an_image_folders_class_sub_folders(tmp_path, tiny_config):
    for name, value in (("circle", 40), ("square", 200)):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), value + i).save(tmp_path / "images" / name / f"{i}.png")
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--train_data_dir", tmp_path / "images", "--max_train_steps", 2,
                      "--checkpointing_steps", 2, "--save_images_steps", 2, "--class_conditional", "--no_evaluate"),
           report_dir=tmp_path / "r")
    index = json.loads((out / "model_index.json").read_text())
    assert index["id2label"] == {"0": "circle", "1": "square"}


def saved_dataset(tmp_path, labels):
    import datasets

    images = [Image.new("L", (8, 8), 10 * i) for i in range(3 if labels is None else len(labels))]
    columns = {"image": images} if labels is None else {"image": images, "label": labels}
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_class_conditional_on_data_without_labels_is_refused_naming_the_column(tmp_path):
    saved_dataset(tmp_path, None)
    with pytest.raises(ValueError, match="no label column 'label'.*--label_column"):
        run_main("--dataset_name", tmp_path / "saved", "--class_conditional", "--output_dir", tmp_path / "out")


def test_class_conditional_on_a_single_class_is_refused(tmp_path):
    saved_dataset(tmp_path, [3, 3, 3])
    with pytest.raises(ValueError, match="at least two classes, but 'label' holds 1"):
        run_main("--dataset_name", tmp_path / "saved", "--class_conditional", "--output_dir", tmp_path / "out")


def test_a_label_column_that_is_not_integer_is_refused(tmp_path):
    saved_dataset(tmp_path, ["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="--label_column 'label' holds string values; class labels must be integers"):
        run_main("--dataset_name", tmp_path / "saved", "--class_conditional", "--output_dir", tmp_path / "out")


def test_a_label_dropout_probability_outside_0_1_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--class_dropout_prob must lie in \\[0, 1\\), got 1.0"):
        run_main("--class_conditional", "--class_dropout_prob", 1.0, "--output_dir", tmp_path / "out")


def test_a_pretrained_network_without_a_class_embedding_is_refused_for_a_conditional_run(tmp_path, tiny_config):
    out = tmp_path / "plain"
    launch(train_args(out, tiny_config, "--max_train_steps", 1, "--checkpointing_steps", 1, "--save_images_steps", 1,
                      "--no_evaluate"), report_dir=tmp_path / "r")
    with pytest.raises(ValueError, match="num_class_embeds=None, but this run needs 11"):
        run_main("--pretrained_model_name_or_path", out, "--class_conditional", "--output_dir", tmp_path / "out")
