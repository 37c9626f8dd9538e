"""Secret generation, masking and refusal of placeholders and defaults."""

from __future__ import annotations

import stat

import pytest

from mlstack.errors import PlaceholderSecretError
from mlstack.secrets import PLACEHOLDER, check_secrets, generate_secret, init_env, mask, weakness
from mlstack.settings import Settings

NAMES = ["POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"]


@pytest.fixture
def example(tmp_path):
    path = tmp_path / ".env.example"
    path.write_text(f"# comment stays\nPOSTGRES_PASSWORD={PLACEHOLDER}\nMINIO_ROOT_PASSWORD={PLACEHOLDER}\nPORT=1\n")
    return path


def test_generated_secrets_are_long_random_and_uri_safe():
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert len(first) == 32 and first.isalnum()


def test_init_writes_env_mode_0600_with_every_placeholder_filled(example, tmp_path):
    env = tmp_path / ".env"
    result = init_env(env, example, NAMES)

    assert result.created_file and sorted(result.generated) == sorted(NAMES)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    text = env.read_text()
    assert PLACEHOLDER not in text
    assert text.startswith("# comment stays\n") and "PORT=1\n" in text


def test_init_never_rotates_an_existing_secret(example, tmp_path):
    env = tmp_path / ".env"
    init_env(env, example, NAMES)
    before = env.read_text()

    result = init_env(env, example, NAMES)

    assert not result.generated and not result.created_file
    assert env.read_text() == before


def test_rotate_replaces_every_secret(example, tmp_path):
    env = tmp_path / ".env"
    init_env(env, example, NAMES)
    old = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)

    result = init_env(env, example, NAMES, rotate=True)

    new = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
    assert sorted(result.rotated) == sorted(NAMES)
    assert all(new[name] != old[name] for name in NAMES)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_init_keeps_a_weak_user_value_for_up_to_refuse(example, tmp_path):
    env = tmp_path / ".env"
    env.write_text("POSTGRES_PASSWORD=minioadmin\n")
    init_env(env, example, NAMES)
    assert "POSTGRES_PASSWORD=minioadmin\n" in env.read_text()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "placeholder"),
        (PLACEHOLDER, "placeholder"),
        ("minioadmin", "well-known"),
        ("short", "shorter"),
        ("long-enough-but-$HOME-inside", "'$'"),
    ],
)
def test_weak_values_are_named_with_their_reason(value, reason):
    assert reason in weakness(value)


def test_check_secrets_names_each_offending_variable_but_not_its_value(project):
    from mlstack.envfile import update_env

    update_env(project.env_file, {"S3_ADMIN_SECRET_KEY": "minioadmin", "POSTGRES_PASSWORD": PLACEHOLDER})
    settings = Settings.load(project.project_dir)

    with pytest.raises(PlaceholderSecretError) as error:
        check_secrets(settings, "mlflow")

    message = str(error.value)
    assert "S3_ADMIN_SECRET_KEY is a well-known default" in message
    assert "POSTGRES_PASSWORD is still a placeholder" in message
    assert "mlstack init" in message
    assert "MLFLOW_S3_SECRET_KEY" not in message


def test_mask_never_shows_the_whole_secret():
    secret = generate_secret()
    shown = mask(secret)
    assert secret not in shown and shown.startswith(secret[:4]) and "32 chars" in shown
