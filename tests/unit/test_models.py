"""Model resolution: the embedded model, local folders, and one clear line when a model can't be had."""

from pathlib import Path

import pytest

from rlaif.engines import models
from rlaif.engines.models import ModelNotFoundError, resolve_model


def test_embedded_model_is_a_safetensors_folder_and_is_reused(embedded_model: Path) -> None:
    assert (embedded_model / "model.safetensors").is_file()
    assert (embedded_model / "tokenizer.json").is_file()
    assert resolve_model("smollm2-135m-instruct") == embedded_model  # second call: no conversion


def test_local_folder_is_used_as_is(tiny_model: Path) -> None:
    assert resolve_model(str(tiny_model)) == tiny_model.resolve()


def test_missing_local_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "nowhere"))


def test_unreachable_hub_id_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="some-org/some-model") as info:
        resolve_model("some-org/some-model")
    assert "\n" not in str(info.value)


def test_bad_hash_of_the_embedded_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_EMBEDDED_SHA256", "0" * 64)
    with pytest.raises(ModelNotFoundError, match="sha256"):
        models.embedded_gguf_path()
