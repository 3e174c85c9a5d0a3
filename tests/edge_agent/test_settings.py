"""Agent settings: TOML file + GRUWATCH_* env vars, env over file, clear errors naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.settings import AgentSettings, SettingsError, env_var, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the GRUWATCH_* variables they set."""
    import os

    for name in list(os.environ):
        if name.startswith("GRUWATCH_"):
            monkeypatch.delenv(name)


def _minimal_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRUWATCH_BROKER", "mqtts://broker.example:8884")
    monkeypatch.setenv("GRUWATCH_AGENT_ID", "gw-01")
    monkeypatch.setenv("GRUWATCH_MODEL", str(tmp_path / "bundle"))
    monkeypatch.setenv("GRUWATCH_TRUSTED_KEYS", f"{tmp_path}/a.pub, {tmp_path}/b.pub")
    monkeypatch.setenv("GRUWATCH_STORE", str(tmp_path / "agent.db"))
    monkeypatch.setenv("GRUWATCH_METRICS_PORT", "9200")


def test_env_vars_alone_configure_an_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _minimal_env(monkeypatch, tmp_path)
    s = load_settings(None)
    assert s.broker_host == "broker.example"
    assert s.broker_port == 8884
    assert s.broker_tls is True
    assert s.prefix == "gruwatch"
    assert s.agent_id == "gw-01"
    assert s.model == tmp_path / "bundle"
    assert s.trusted_keys == [tmp_path / "a.pub", tmp_path / "b.pub"]
    assert s.store == tmp_path / "agent.db"
    assert s.metrics_port == 9200
    assert s.client_id == "gruwatch-agent-gw-01"
    assert s.allow_unsigned is False
    assert s.mqtt_qos == 1


def test_env_overrides_file_and_file_overrides_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        'broker = "mqtt://file-broker"\n'
        'agent_id = "from-file"\n'
        'model = "/opt/model"\n'
        'store = "/var/lib/agent.db"\n'
        'trusted_keys = ["/etc/k1.pub"]\n'
        'prefix = "plant/a"\n'
        "queue_max_size = 77\n"
        'mqtt_protocol = "3.1.1"\n'
        'mqtt_username = "agent"\n'
        'mqtt_password = "s3cret"\n'
    )
    monkeypatch.setenv("GRUWATCH_AGENT_ID", "from-env")
    monkeypatch.setenv("GRUWATCH_QUEUE_MAX_SIZE", "99")
    s = load_settings(cfg)
    assert s.agent_id == "from-env"  # env wins
    assert s.queue_max_size == 99
    assert s.broker_host == "file-broker"  # file over default
    assert s.broker_port == 1883
    assert s.broker_tls is False
    assert s.prefix == "plant/a"
    assert s.mqtt_protocol == "3.1.1"
    assert s.trusted_keys == [Path("/etc/k1.pub")]
    assert s.batch_max_size == AgentSettings.model_fields["batch_max_size"].default  # default kept
    assert s.mqtt_password is not None
    assert s.mqtt_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert "s3cret" not in str(s.model_dump())


def test_missing_required_names_env_var_and_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRUWATCH_BROKER", "mqtt://localhost")
    monkeypatch.setenv("GRUWATCH_ALLOW_UNSIGNED", "true")
    with pytest.raises(SettingsError) as err:
        load_settings(None)
    msg = str(err.value)
    for field in ("agent_id", "model", "store"):
        assert f"{field} is required: set {env_var(field)} or `{field} = ...`" in msg
    assert "broker is required" not in msg


@pytest.mark.parametrize(
    ("var", "value", "expect"),
    [
        ("GRUWATCH_BROKER", "http://x", "mqtt:// or mqtts://"),
        ("GRUWATCH_BROKER", "mqtt://user:pw@host", "must not carry credentials"),
        ("GRUWATCH_BROKER", "mqtt://host:99999", "bad port"),
        ("GRUWATCH_AGENT_ID", "gw/01", "agent_id 'gw/01' must match"),
        ("GRUWATCH_PREFIX", "a/+/b", "must match"),
        ("GRUWATCH_MQTT_PROTOCOL", "4", "MQTT_PROTOCOL"),
        ("GRUWATCH_RAW_SAMPLE_FRACTION", "1.5", "GRUWATCH_RAW_SAMPLE_FRACTION"),
    ],
)
def test_invalid_values_are_explained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str, value: str, expect: str
) -> None:
    _minimal_env(monkeypatch, tmp_path)
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match="invalid agent settings") as err:
        load_settings(None)
    assert expect in str(err.value)


def test_unsigned_needs_explicit_opt_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _minimal_env(monkeypatch, tmp_path)
    monkeypatch.delenv("GRUWATCH_TRUSTED_KEYS")
    with pytest.raises(SettingsError, match="GRUWATCH_TRUSTED_KEYS"):
        load_settings(None)
    monkeypatch.setenv("GRUWATCH_ALLOW_UNSIGNED", "1")
    assert load_settings(None).allow_unsigned is True


def test_trusted_keys_accept_json_list_in_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _minimal_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRUWATCH_TRUSTED_KEYS", '["/k/one.pub", "/k/two,with-comma.pub"]')
    assert load_settings(None).trusted_keys == [Path("/k/one.pub"), Path("/k/two,with-comma.pub")]


def test_tls_files_need_mqtts_and_come_in_pairs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _minimal_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRUWATCH_MQTT_CERT_FILE", "/c.pem")
    with pytest.raises(SettingsError, match="go together"):
        load_settings(None)
    monkeypatch.setenv("GRUWATCH_MQTT_KEY_FILE", "/k.pem")
    assert load_settings(None).mqtt_key_file == Path("/k.pem")
    monkeypatch.setenv("GRUWATCH_BROKER", "mqtt://plain")
    with pytest.raises(SettingsError, match="need an mqtts:// broker URL"):
        load_settings(None)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("broker = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('brokr = "mqtt://x"\n')
    with pytest.raises(SettingsError, match="unknown setting 'brokr'"):
        load_settings(typo)


def test_example_config_loads_and_documents_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    example = REPO / "examples" / "agent.toml"
    s = load_settings(example)
    assert s.agent_id
    text = example.read_text()
    for name in AgentSettings.model_fields:
        assert f"\n{name} =" in text or f"\n# {name} =" in text, f"examples/agent.toml lacks {name}"
