"""Settings and the local JWT secret, and the ``token`` command that shares it."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from server.auth import TokenCodec
from server.domain.types import Role
from server.settings import JWT_SECRET_FILE, Settings

ENV_SECRET = "from-the-environment-" + "s" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RF_* setting of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("RF_"):
            monkeypatch.delenv(name)


def test_local_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    var = tmp_path / "var"
    settings = Settings(var_dir=var, jwt_secret=None)
    secret = settings.resolved_jwt_secret()
    path = var / JWT_SECRET_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == secret
    assert len(secret) >= 32
    TokenCodec(secret)  # strong enough to sign with
    assert settings.resolved_jwt_secret() == secret
    assert Settings(var_dir=var, jwt_secret=None).resolved_jwt_secret() == secret
    # Another directory gets its own secret: it is random, never a constant.
    assert Settings(var_dir=tmp_path / "other").resolved_jwt_secret() != secret


def test_secret_from_the_environment_wins_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RF_JWT_SECRET", ENV_SECRET)
    settings = Settings(var_dir=tmp_path / "var")
    assert settings.resolved_jwt_secret() == ENV_SECRET
    assert not (tmp_path / "var" / JWT_SECRET_FILE).exists()


def test_explicit_secret_writes_no_file(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, jwt_secret=SecretStr(ENV_SECRET))
    assert settings.resolved_jwt_secret() == ENV_SECRET
    assert list(tmp_path.iterdir()) == []


def test_empty_secret_file_is_an_error_not_a_blank_secret(tmp_path: Path) -> None:
    (tmp_path / JWT_SECRET_FILE).write_text("\n")
    with pytest.raises(RuntimeError, match="empty"):
        Settings(var_dir=tmp_path, jwt_secret=None).resolved_jwt_secret()


def test_token_codec_refuses_a_short_secret() -> None:
    with pytest.raises(ValueError, match="32"):
        TokenCodec("s" * 31)
    codec = TokenCodec("s" * 32)
    caller = codec.verify(codec.issue(account="a", user="u", role=Role.ADMIN))
    assert (caller.account_id, caller.user_id, caller.role) == ("a", "u", Role.ADMIN)


async def run_cli(cwd: Path, repo_root: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root), str(repo_root / "protos")])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolutionflow_cli",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


TOKEN_ARGS = ("token", "--account", "a", "--user", "u", "--role", "engineer")


async def test_token_command_uses_the_local_secret(tmp_path: Path, repo_root: Path) -> None:
    # The secret `serve` created on its first start.
    secret = Settings(var_dir=tmp_path / "var").resolved_jwt_secret()
    code, out, err = await run_cli(tmp_path, repo_root, *TOKEN_ARGS)
    assert code == 0, err
    caller = TokenCodec(secret).verify(out.strip())
    assert (caller.account_id, caller.user_id, caller.role) == ("a", "u", Role.ENGINEER)


async def test_token_command_never_creates_a_secret(tmp_path: Path, repo_root: Path) -> None:
    code, out, err = await run_cli(tmp_path, repo_root, *TOKEN_ARGS)
    assert code != 0 and out == ""
    where = str((tmp_path / "var" / JWT_SECRET_FILE).resolve())
    assert where in err and "RF_JWT_SECRET" in err and "resolutionflow serve" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("flag", ["--account", "--user"])
async def test_token_command_refuses_an_empty_id(
    tmp_path: Path, repo_root: Path, flag: str
) -> None:
    Settings(var_dir=tmp_path / "var").resolved_jwt_secret()
    args = list(TOKEN_ARGS)
    args[args.index(flag) + 1] = " "
    code, out, err = await run_cli(tmp_path, repo_root, *args)
    assert code != 0 and out == ""
    assert flag in err and "must not be empty" in err, err


@pytest.mark.parametrize("command", [TOKEN_ARGS, ("server", "--grpc-addr", "127.0.0.1:0")])
async def test_a_binary_secret_file_is_a_one_line_error(
    tmp_path: Path, repo_root: Path, command: tuple[str, ...]
) -> None:
    path = tmp_path / "var" / JWT_SECRET_FILE
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe\x00\x81 not text")
    code, _, err = await run_cli(tmp_path, repo_root, *command)
    assert code == 2
    assert "Traceback" not in err and "UnicodeDecodeError" not in err, err
    line = err.strip().splitlines()[-1]
    assert str(path) in line and "delete it" in line and "RF_JWT_SECRET" in line, err
