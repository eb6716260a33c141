"""The strict platform config: every shipped file validates; mistakes name their key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.config_files import validate_file
from core.config import (
    ConfigError,
    PlatformConfig,
    hash_api_key,
    load_platform_config,
    resolve_uri,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted(p for p in (REPO / "configs").rglob("*") if p.suffix in {".yaml", ".yml"})


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_file_validates(path: Path) -> None:
    validate_file(path)


def test_platform_config_has_demo_tenants() -> None:
    cfg = load_platform_config(REPO / "configs/platform.yaml")
    assert {t.id for t in cfg.tenants} >= {"acme", "globex"}
    assert cfg.tenant_for_key_hash(hash_api_key("acme-demo-key")).id == "acme"
    assert cfg.tenant_for_key_hash(hash_api_key("not-a-key")) is None


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict:
    return yaml.safe_load((REPO / "configs/platform.yaml").read_text())


def test_typo_in_nested_key_names_the_key_path(tmp_path: Path) -> None:
    data = _base()
    diversity = data["tenants"][0]["surfaces"]["home"]["slate"]["steps"][3]
    diversity["max_per_categroy"] = diversity.pop("max_per_category")
    with pytest.raises(ConfigError) as err:
        load_platform_config(_write(tmp_path, data))
    keys = [i.key for i in err.value.issues]
    assert "tenants.0.surfaces.home.slate.steps.3.diversity.max_per_categroy" in keys
    assert "unknown key" in str(err.value)
    assert str(tmp_path / "platform.yaml") in str(err.value)


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    data = _base()
    data["tenants"][0]["surfaces"]["home"]["sources"][0]["quota"] = 0
    data["tenants"][1]["display_name"] = None
    with pytest.raises(ConfigError) as err:
        load_platform_config(_write(tmp_path, data))
    keys = {i.key for i in err.value.issues}
    assert "tenants.0.surfaces.home.sources.0.two_tower.quota" in keys
    assert "tenants.1.display_name" in keys


def test_unknown_source_kind_is_rejected(tmp_path: Path) -> None:
    data = _base()
    data["tenants"][0]["surfaces"]["home"]["sources"][0]["kind"] = "magic"
    with pytest.raises(ConfigError) as err:
        load_platform_config(_write(tmp_path, data))
    assert any(i.key.startswith("tenants.0.surfaces.home.sources.0") for i in err.value.issues)


def test_cross_checks(tmp_path: Path) -> None:
    data = _base()
    data["experiments"][0]["tenant"] = "nobody"
    with pytest.raises(ConfigError, match="unknown tenant"):
        load_platform_config(_write(tmp_path, data))
    data = _base()
    data["tenants"][1]["api_key_hashes"] = data["tenants"][0]["api_key_hashes"]
    with pytest.raises(ConfigError, match="shared by tenants"):
        load_platform_config(_write(tmp_path, data))
    data = _base()
    data["tenants"][0]["api_key_hashes"] = ["plaintext-key"]
    with pytest.raises(ConfigError, match="sha256"):
        load_platform_config(_write(tmp_path, data))


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_platform_config(bad)
    with pytest.raises(ConfigError, match="No such file"):
        load_platform_config(tmp_path / "missing.yaml")


def test_relative_storage_resolves_against_recsys_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    assert resolve_uri("var/registry") == str(tmp_path / "var/registry")
    assert resolve_uri("s3://bucket/registry") == "s3://bucket/registry"
    cfg = PlatformConfig.model_validate(_base())
    assert cfg.resolved_storage().events == str(tmp_path / "var/data/events")


def test_cli_validate_reports_key_path_and_exit_code(tmp_path: Path, capsys) -> None:
    from cluster.cli import main

    data = _base()
    data["tenants"][0]["policy"]["blocked_categoriez"] = []
    path = _write(tmp_path, data)
    code = main(["config", "validate", str(path)])
    out = capsys.readouterr().out
    assert code != 0
    assert "tenants.0.policy.blocked_categoriez" in out
    assert str(path) in out
    assert main(["config", "validate", str(REPO / "configs/platform.yaml")]) == 0
