"""Shared fixtures: the tiny models (built once per session into the cache) and a scripted policy."""

from __future__ import annotations

import pytest

from helpers.policies import ScriptedPolicy
from iapo.models.loader import load_model


@pytest.fixture(scope="session")
def tiny_student():
    """(model, processor) of the offline tiny student, float32 on the CPU."""
    return load_model("tiny-student", device="cpu")


@pytest.fixture(scope="session")
def tiny_processor(tiny_student):
    return tiny_student[1]


@pytest.fixture
def scripted():
    return ScriptedPolicy
