"""The local stack starts from a checkout in any folder: a private (0700) one, as root or not.

As root, PostgreSQL runs as ``postgres``, which cannot enter a 0700 folder: its files must live
where that user can reach them, and the user's folder must keep its permissions.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Ports of their own, apart from the test stack and `make run`, and below the ephemeral range
# (32768 and up: a client socket may hold such a port for a moment, and a server fails to bind).
PORTS = {"pg": 24432, "redis": 24379, "kafka": 24092, "es": 24200}


def _env(clone: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "TALLY_DATA_DIR": str(clone / ".tally" / "private"),
        "TALLY_PG_DSN": f"postgresql://postgres@127.0.0.1:{PORTS['pg']}/tally_private",
        "TALLY_REDIS_URL": f"redis://127.0.0.1:{PORTS['redis']}/0",
        "TALLY_KAFKA_BOOTSTRAP": f"127.0.0.1:{PORTS['kafka']}",
        "TALLY_ES_URL": f"http://127.0.0.1:{PORTS['es']}",
    }


def _tally(clone: Path, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tally.cli", *argv],
        cwd=clone,
        env=_env(clone),
        user=user,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def private_clone() -> Iterator[Path]:
    """A clone of this repository inside a fresh 0700 folder (what ``mktemp -d`` makes)."""
    folder = Path(tempfile.mkdtemp(prefix="tally-private-"))
    clone = folder / "tally"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    try:
        yield clone
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the case of the issue: root, 0700 folder")
def test_root_starts_the_stack_and_migrates_from_a_checkout_only_root_can_enter(
    private_clone: Path,
) -> None:
    folder = private_clone.parent
    assert folder.stat().st_mode & 0o777 == 0o700
    try:
        up = _tally(private_clone, "stack", "up")
        assert up.returncode == 0, up.stderr + up.stdout
        migrated = _tally(private_clone, "migrate")
        assert migrated.returncode == 0, migrated.stderr + migrated.stdout
        status = _tally(private_clone, "stack", "status")
        assert status.returncode == 0, status.stdout
        home = pwd.getpwnam("postgres").pw_dir
        assert f"{home}/tally-stacks/" in status.stdout.replace("\n", "")
    finally:
        reset = _tally(private_clone, "stack", "reset")
    assert reset.returncode == 0, reset.stderr
    # Its own folders were never opened up, and reset left nothing behind for it.
    assert folder.stat().st_mode & 0o777 == 0o700
    location = private_clone / ".tally" / "private"
    assert not location.exists()


def _ordinary_user() -> str | None:
    for entry in pwd.getpwall():
        if 1000 <= entry.pw_uid < 65534 and entry.pw_shell.endswith("sh"):
            return entry.pw_name
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_an_ordinary_user_starts_the_stack_from_a_private_checkout(private_clone: Path) -> None:
    user = _ordinary_user()
    if user is None:
        pytest.skip("this machine has no ordinary user account")
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import tally"], user=user, capture_output=True, check=False
        )
    except PermissionError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip(f"{user} cannot run this virtual environment's Python ({sys.executable})")
    owner = pwd.getpwnam(user)
    for path in [private_clone.parent, *private_clone.parent.rglob("*")]:
        os.lchown(path, owner.pw_uid, owner.pw_gid)
    try:
        up = _tally(private_clone, "stack", "up", user=user)
        assert up.returncode == 0, up.stderr + up.stdout
        migrated = _tally(private_clone, "migrate", user=user)
        assert migrated.returncode == 0, migrated.stderr + migrated.stdout
        # Its own server: the data stays in its own checkout.
        assert (private_clone / ".tally" / "private" / "postgres" / "data" / "PG_VERSION").exists()
    finally:
        _tally(private_clone, "stack", "reset", user=user)
    assert private_clone.parent.stat().st_mode & 0o777 == 0o700
