"""``wslarkbot serve --config relay.toml`` (issue 21): keys, order, errors, secret files, the example."""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import pytest

from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay.cli import build_config, register
from wslarkbot.relay.config import RelayConfig, option_fields
from wslarkbot.relay.config_file import example_config, load_config_file, toml_loads

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "deploy" / "relay.example.toml"


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "relay.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_field_is_a_key_and_flags_beat_variables_beat_the_file(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, 'port = 9000\nretry_after = 9\nlog_level = "DEBUG"\nchallenge_timeout = 1\n')
    env = {"WSLARKBOT_RETRY_AFTER": "7"}
    config = build_config(args("--config", str(path), "--log-level", "WARNING"), env)
    assert (config.port, config.retry_after, config.log_level) == (9000, 7, "WARNING")
    assert config.challenge_timeout == 1.0 and isinstance(config.challenge_timeout, float)
    again = build_config(args(), {"WSLARKBOT_CONFIG": str(path)})
    assert again.port == 9000 and again.retry_after == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 1\nprot = 2\n", r"relay\.toml:2: unknown key 'prot' \(did you mean 'port'\?\)"),
        ('port = "8888"\n', r"relay\.toml:1: port must be an int .* not a str"),
        ("fast_path = 1\n", r"relay\.toml:1: fast_path must be a bool"),
        ("port = = 1\n", r"not valid TOML \(at line 1, column \d+\)"),
        (
            'admin_password = "x"\nadmin_password_file = "/nope"\n',
            r"set admin_password or admin_password_file",
        ),
        ('admin_password_file = "/nonexistent/pw"\n', r"relay\.toml:1: admin_password_file: cannot read"),
    ],
)
def test_bad_files_stop_the_start_with_the_key_and_its_line(
    tmp_path: pathlib.Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_config_file(write(tmp_path, text))


def test_a_bad_value_is_never_quoted_in_the_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_config_file(write(tmp_path, 'redis_url = 12345678\nadmin_password = "s3cr3t!" x\n'))
    assert "s3cr3t" not in str(err.value)


def test_secrets_come_from_files_in_the_config_or_the_environment(tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n", encoding="utf-8")
    path = write(tmp_path, f'admin_user = "admin"\nadmin_password_file = "{secret}"\n')
    assert build_config(args("--config", str(path)), {}).admin_password == "hunter2"
    redis = tmp_path / "redis"
    redis.write_text("redis://:pw@127.0.0.1:6379/0", encoding="utf-8")
    config = build_config(args(), {"WSLARKBOT_REDIS_FILE": str(redis)})
    assert config.redis_url == "redis://:pw@127.0.0.1:6379/0" and "pw@" not in repr(config)


def test_the_example_config_is_the_generated_one_and_sets_every_field_to_its_default() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == example_config(), "run: wslarkbot serve --example-config"
    values = load_config_file(EXAMPLE)
    fields = {f.name: f for f in option_fields()}
    assert values == {name: f.default for name, f in fields.items() if f.default is not None}
    top_level = example_config().split("# Per-tenant limits")[0]
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and " = " in line[:40] else line for line in top_level.splitlines()
    )

    every = toml_loads(uncommented)
    assert set(fields) <= set(every), "every field appears in the example"
    RelayConfig(**{k: v for k, v in every.items() if k in fields and k != "redis_url"})


def test_serve_example_config_prints_it_and_exits() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wslarkbot", "serve", "--example-config"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == example_config()


def test_serve_refuses_a_bad_config_file_with_exit_status_2(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "bogus = 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "wslarkbot", "serve", "--config", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 2 and "unknown key 'bogus'" in out.stderr
