import pytest

from lakecurate.runtime.config import Config, config_hash, load_config, replace
from lakecurate.runtime.errors import ConfigError


def test_defaults_work_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.lake.path == "./lake"
    assert cfg.model.name == ""  # the lake's model, ViT-B-32 on a lake without embeddings


def test_yaml_file_and_overrides(tmp_path):
    f = tmp_path / "lakecurate.yaml"
    f.write_text(
        "lake: {path: /data/lake}\n"
        "model: {name: lakecurate-tiny, batch_size: 8}\n"
        "sources: [/data/a, {uri: /data/b, format: folder}]\n"
        "dedup: {methods: [exact, minhash]}\n"
    )
    cfg = load_config(f, {"model.batch_size": 16, "spark.master": None})
    assert cfg.lake.path == "/data/lake"
    assert cfg.model.batch_size == 16
    assert cfg.spark.master == ""  # None override leaves the default (local[*] or spark-submit's)
    assert [s.uri for s in cfg.sources] == ["/data/a", "/data/b"]
    assert cfg.sources[1].format == "folder"
    assert cfg.dedup.methods == ("exact", "minhash")


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("model: {precision: fp8}", "model.precision", "fp32"),
        ("modle: {}", "modle", "allowed"),
        ("model: {batch_size: many}", "model.batch_size", "integer"),
        ("model: {batch_size: 0}", "model.batch_size", ">= 1"),
        ("dedup: {methods: [exact, fuzzy]}", "dedup.methods", "semantic"),
        ("dedup: {semantic_refit_growth: -0.1}", "dedup.semantic_refit_growth", "fraction"),
        ("lake: [1, 2]", "lake", "mapping"),
        ("- just a list", "--config", "mapping"),
        ("model: {name: [unclosed", "--config", "YAML"),
    ],
)
def test_errors_name_the_key_and_what_is_allowed(tmp_path, text, key, words):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert e.value.key == key
    assert words in str(e.value)
    assert e.value.exit_code == 2


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_hash_is_stable_and_changes_with_content():
    a, b = load_config(), load_config()
    assert config_hash(a) == config_hash(b)
    c = replace(a, model={"batch_size": 7})
    assert c.model.batch_size == 7
    assert config_hash(c) != config_hash(a)
