"""A script's PIPELINE argument: every way it can name no usable pipeline is one line and exit status 2."""

import json

import pytest
from script_modules import load_script

from ddpm_from_scratch.hub.loading import PipelineSourceError, check_pipeline_folder, load_pipeline


def test_a_missing_folder_that_could_be_a_hub_id_says_no_folder_and_no_cached_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(PipelineSourceError) as error:
        load_pipeline("no-such-folder")
    message = str(error.value)
    assert "PIPELINE 'no-such-folder'" in message and "no such folder" in message and "offline" in message
    assert "\n" not in message


def test_a_missing_path_is_reported_as_a_missing_folder(tmp_path):
    with pytest.raises(PipelineSourceError, match="expected a pipeline folder, found nothing there"):
        load_pipeline(str(tmp_path / "runs" / "ddpm-digits"))


def test_a_file_is_not_a_pipeline_folder(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(PipelineSourceError, match="found a file there"):
        load_pipeline(str(tmp_path / "weights.safetensors"))


def test_a_folder_without_model_index_lists_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "images").mkdir()
    with pytest.raises(PipelineSourceError) as error:
        check_pipeline_folder(tmp_path)
    assert "without model_index.json" in str(error.value)
    assert "images/, notes.txt" in str(error.value)


def test_a_component_folder_points_to_the_pipeline_folder_above_it(tiny_pipeline_dir):
    with pytest.raises(PipelineSourceError, match="one component of the pipeline in .*: pass that folder"):
        load_pipeline(str(tiny_pipeline_dir / "unet"))


def test_a_pipeline_of_another_kind_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(PipelineSourceError, match="holds a StableDiffusionPipeline, not a DDPMFromScratchPipeline or DDPMPipeline"):
        load_pipeline(str(tmp_path))


def test_a_remote_code_model_index_names_its_class_in_a_list(tiny_pipeline_dir, tmp_path):
    index = {"_class_name": ["pipeline", "DDPMFromScratchPipeline"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    check_pipeline_folder(tmp_path)  # accepted: the class is the expected one


def test_a_model_index_that_is_not_json_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(PipelineSourceError, match="model_index.json is not valid JSON"):
        load_pipeline(str(tmp_path))


def test_missing_weights_are_one_line_naming_the_folder(tiny_pipeline_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(PipelineSourceError) as error:
        load_pipeline(str(broken))
    assert f"PIPELINE {str(broken)!r} could not be loaded" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_good_folder_loads(tiny_pipeline_dir):
    assert load_pipeline(str(tiny_pipeline_dir)).unet.config.sample_size == 8


@pytest.mark.parametrize("script, extra", [("sample", []), ("evaluate", []), ("explain", []),
                                           ("export_diffusers", ["out"])])
def test_each_script_reports_a_bad_pipeline_in_one_line_with_exit_status_2(capsys, tmp_path, script, extra):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        load_script(script).main([str(tmp_path / "empty"), *[str(tmp_path / e) for e in extra]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "without model_index.json" in err and "Traceback" not in err


def test_train_refuses_a_pretrained_folder_that_does_not_exist(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        load_script("train").parse_args(["--pretrained_model_name_or_path", str(tmp_path / "runs" / "old")])
    assert exit_.value.code == 2
    assert "--pretrained_model_name_or_path" in capsys.readouterr().err
