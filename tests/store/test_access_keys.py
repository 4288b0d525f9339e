"""AccessKey storage (store/access_keys.py) on SQLite and on a real PostgreSQL server.

Secrets come back for HMAC checks but are not in the database in clear; a ciphertext moved to
another key's row, or read with another encryption key, does not decrypt; revoked keys are
gone; a nonce is accepted once per key (also through a second store on the same database, as a
second server would see it).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import create_engine, update

from openeas.store.access_keys import (
    ENCRYPTION_KEY_FILE,
    AccessKeyNotFound,
    AccessKeyStore,
    access_keys,
    ensure_encryption_key,
)
from tests.store.postgres_cluster import postgres_cluster


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('keys') / 'registry.db'}"
    else:
        with postgres_cluster() as url:
            yield url


def test_keys_round_trip(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    store = AccessKeyStore(engine, ensure_encryption_key(tmp_path))
    store.create_schema()
    store.create_schema()  # idempotent
    full = store.create(read_only=False, description="deploys")
    ro = store.create(read_only=True)
    assert full.key.id != ro.key.id and full.secret != ro.secret
    assert [(k.id, k.read_only) for k in store.list()][-2:] == [(full.key.id, False), (ro.key.id, True)]
    key, secret = store.lookup(full.key.id)
    assert (key.description, secret) == ("deploys", full.secret)
    with engine.connect() as conn:
        stored = [r.secret for r in conn.execute(access_keys.select())]
    assert full.secret not in " ".join(stored) and ro.secret not in " ".join(stored)

    # another encryption key reads nothing; a ciphertext on another key's row does not decrypt
    with pytest.raises(InvalidTag):
        AccessKeyStore(engine, ensure_encryption_key(tmp_path / "other")).lookup(full.key.id)
    with engine.begin() as conn:
        sealed = conn.execute(access_keys.select().where(access_keys.c.id == full.key.id)).one().secret
        conn.execute(update(access_keys).where(access_keys.c.id == ro.key.id).values(secret=sealed))
    with pytest.raises(InvalidTag):
        store.lookup(ro.key.id)

    store.revoke(ro.key.id)
    with pytest.raises(AccessKeyNotFound):
        store.lookup(ro.key.id)
    with pytest.raises(AccessKeyNotFound):
        store.revoke(ro.key.id)
    assert ro.key.id not in {k.id for k in store.list()}

    other_server = AccessKeyStore(create_engine(db_url), ensure_encryption_key(tmp_path))
    assert store.use_nonce(full.key.id, "nonce-1", 60)
    assert not other_server.use_nonce(full.key.id, "nonce-1", 60)  # a replay to another server
    assert other_server.use_nonce("OEAKOTHER", "nonce-1", 60)  # nonces are per key
    engine.dispose()


def test_encryption_key_file(tmp_path: Path) -> None:
    key = ensure_encryption_key(tmp_path)
    path = tmp_path / ENCRYPTION_KEY_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_encryption_key(tmp_path) == key  # read back, not replaced
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="256-bit key"):
        ensure_encryption_key(tmp_path)
