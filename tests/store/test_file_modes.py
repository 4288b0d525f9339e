"""Files that hold secrets are private to their owner (issue 17, item 6): mode 0600.

The SQLite registry holds every service token, the admin token file the control API's token and the
encryption key the AccessKey secrets' key. Each is created 0600; a registry file made earlier with a
looser mode is tightened when it is opened. (The encryption key's mode is also checked in
tests/store/test_access_keys.py.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from openeas.config import ensure_admin_token
from openeas.store import Registry, sqlite_url
from openeas.store.access_keys import ensure_encryption_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644 unless made private
    try:
        registry = Registry(sqlite_url(tmp_path))
        registry.create_schema()
        registry.put_gateway("edge", {})
        registry.close()
        ensure_admin_token(tmp_path)
        ensure_encryption_key(tmp_path)
    finally:
        os.umask(old)
    secrets = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {p.name for p in secrets} >= {"registry.db", "admin_token"}
    loose = {p.name: oct(_mode(p)) for p in secrets if _mode(p) & 0o077}
    assert not loose, loose


def test_registry_made_loose_earlier_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    db.touch()
    db.chmod(0o644)
    Registry(sqlite_url(tmp_path)).close()
    assert _mode(db) == 0o600
