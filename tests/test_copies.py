"""Code kept as a copy so that a shipped file stands alone (``# Copied from ddpm_from_scratch.<module>.<name>``, as in
diffusers' ``utils/check_copies.py``) is the same, character for character, as the original."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

import ddpm_from_scratch

PACKAGE = Path(ddpm_from_scratch.__file__).parent
MARKER = re.compile(r"^# Copied from (ddpm_from_scratch(?:\.\w+)+)\.(\w+)\n(?:def|class) (\w+)", re.MULTILINE)


def copies():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for original_module, original_name, name in MARKER.findall(path.read_text(encoding="utf-8")):
            module = ".".join(("ddpm_from_scratch", *path.relative_to(PACKAGE).with_suffix("").parts))
            found.append((module, name, original_module, original_name))
    return found


def test_the_toy_denoiser_keeps_its_copies_of_the_timestep_embedding():
    assert {(name, original) for _, name, _, original in copies()} >= {
        ("TimestepEmbedding", "TimestepEmbedding"), ("sinusoidal_embedding", "sinusoidal_embedding")}


@pytest.mark.parametrize(("module", "name", "original_module", "original_name"), copies())
def test_a_copy_matches_its_original(module, name, original_module, original_name):
    copy = inspect.getsource(getattr(importlib.import_module(module), name))
    original = inspect.getsource(getattr(importlib.import_module(original_module), original_name))
    assert copy == original.replace(original_name, name), f"{module}.{name} differs from {original_module}.{original_name}"


def test_the_pipelines_list_of_learned_variance_types_is_the_schedulers():
    # pipeline_utils.py ships without the scheduler's file beside it, so it keeps its own copy of the constant.
    from ddpm_from_scratch.pipelines import pipeline_utils
    from ddpm_from_scratch.schedulers import scheduling_ddpm

    assert pipeline_utils.LEARNED_VARIANCE_TYPES == scheduling_ddpm.LEARNED_VARIANCE_TYPES
    assert set(scheduling_ddpm.LEARNED_VARIANCE_TYPES) <= set(scheduling_ddpm.VARIANCE_TYPES)
