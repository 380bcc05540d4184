"""Integration tests run the embedded default model (SmolLM2-135M-Instruct) on the CPU."""

import pytest

from langchain_persona_judge.loading import LoadedModel, load_model


@pytest.fixture(scope="session")
def smollm() -> LoadedModel:
    # Loaded once per session; ChatPersonaJudge instances share it through load_model's cache.
    return load_model(device="cpu")
