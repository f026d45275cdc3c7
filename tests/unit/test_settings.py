"""Settings come from MATENGINE_* variables; values passed in (CLI flags) win."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from matengine.config import Settings


def test_environment_values_are_typed(monkeypatch, tmp_path):
    monkeypatch.setenv("MATENGINE_CHUNK_ROWS", "1234")
    monkeypatch.setenv("MATENGINE_WORKER_WAIT", "2.5")
    monkeypatch.setenv("MATENGINE_HOME", str(tmp_path))
    s = Settings()
    assert (s.chunk_rows, s.worker_wait, s.home) == (1234, 2.5, tmp_path)


def test_passed_values_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("MATENGINE_BROKER_URL", "redis://env:6379/0")
    assert Settings(broker_url="amqp://flag//").broker_url == "amqp://flag//"


def test_defaults_without_environment(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv("MATENGINE_" + name.upper(), raising=False)
    s = Settings()
    assert (s.database_url, s.broker_url, s.chunk_rows, s.queue) == (None, None, 200_000, "matengine")
    assert isinstance(s.home, Path) and s.home.name == "matengine"


def test_a_malformed_value_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("MATENGINE_CHUNK_ROWS", "many")
    with pytest.raises(ValidationError, match="chunk_rows"):
        Settings()


def test_declared_datastacks_come_from_the_toml_file(tmp_path):
    path = tmp_path / "stacks.toml"
    path.write_text(
        '[datastacks.a]\nsegmentation_source = "precomputed://file:///s"\nvoxel_resolution = [4, 4, 40]\n'
    )
    [(name, ds)] = Settings(config=path).datastacks().items()
    assert (name, ds.segmentation_source, ds.voxel_resolution) == (
        "a",
        "precomputed://file:///s",
        (4.0, 4.0, 40.0),
    )
