"""Settings from the environment and CLI flags; datastacks declared in a TOML file."""

from __future__ import annotations

from matengine import catalog
from matengine.config import Settings, configure, get_settings


def test_environment_and_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("MATENGINE_BROKER_URL", "redis://example:6379/0")
    monkeypatch.setenv("MATENGINE_HOME", str(tmp_path))
    s = Settings()
    assert s.broker_url == "redis://example:6379/0" and s.home == tmp_path


def test_declared_datastacks_are_created_and_kept_in_step(engine, tmp_path):
    path = tmp_path / "stacks.toml"
    path.write_text(
        "[datastacks.toml_ds]\n"
        'segmentation_source = "precomputed://file:///data/seg"\n'
        "voxel_resolution = [4, 4, 40]\n"
        'schedule = "0 3 * * *"\n'
    )
    configure(config=path)
    try:
        declared = get_settings().datastacks()
        assert catalog.sync_declared_datastacks(engine, declared) == ["toml_ds"]
        ds = catalog.get_datastack(engine, "toml_ds")
        assert (ds.voxel_resolution, ds.schedule) == ((4.0, 4.0, 40.0), "0 3 * * *")
        path.write_text(path.read_text().replace("0 3 * * *", "30 4 * * *"))
        assert catalog.sync_declared_datastacks(engine, get_settings().datastacks()) == []
        assert catalog.get_datastack(engine, "toml_ds").schedule == "30 4 * * *"
    finally:
        from matengine.config import _overrides

        _overrides.pop("config", None)
        get_settings.cache_clear()
        catalog.drop_datastack(engine, "toml_ds")
