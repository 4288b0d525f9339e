"""AccessKeys for the EAS management API (docs/management-api.md), and the nonces they used.

The official `alibabacloud-eas20210701` SDK signs each request with an HMAC keyed by the
AccessKey *secret*, so the server must be able to recover the secret to check a signature: a
one-way hash (as for passwords) cannot work. The secret is therefore stored encrypted at rest
with AES-256-GCM under a key kept outside the database, in `<data_dir>/access_keys.key` (mode
0600, created on first use). The key id is the GCM associated data, so a ciphertext copied onto
another key's row does not decrypt. A database dump alone reveals no secret; the data dir's key
file and the database together do (as the admin token file does today).

Revoking a key deletes its row: a revoked key is unknown from then on.

Nonces: each signed request carries a nonce; a nonce used once within the clock window is
refused. They are kept in the store (not in process memory) so that several `openeas server`
processes on one PostgreSQL registry refuse a replay sent to another one; rows older than the
window are deleted as new ones are written.

The tables sit on their own MetaData: they are created by `AccessKeyStore.create_schema`, and
writes here never bump the registry's change feed (gateways do not care about keys).
"""

from __future__ import annotations

import base64
import os
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Boolean, Column, Engine, Float, MetaData, String, Table, Text, delete, select
from sqlalchemy.exc import IntegrityError

ENCRYPTION_KEY_FILE = "access_keys.key"
ID_PREFIX = "OEAK"  # "openeas AccessKey"; Alibaba Cloud's ids start with LTAI
_ID_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 30  # as Alibaba Cloud's AccessKey secrets
PRUNE_EVERY = 256  # nonce inserts between deletions of expired nonces

metadata = MetaData()

access_keys = Table(
    "access_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("secret", Text, nullable=False),  # base64(nonce 12 bytes + AES-GCM ciphertext)
    Column("read_only", Boolean, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

signature_nonces = Table(
    "access_key_nonces",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)


@dataclass(frozen=True, slots=True)
class AccessKey:
    id: str
    read_only: bool
    description: str
    created_at: float


@dataclass(frozen=True, slots=True)
class NewAccessKey:
    key: AccessKey
    secret: str  # shown once, to whoever created the key


class AccessKeyNotFound(KeyError):
    pass


def ensure_encryption_key(data_dir: Path) -> bytes:
    """The AES-256 key of the secrets, created (mode 0600) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ENCRYPTION_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            key = base64.b64decode(path.read_text().strip(), validate=True)
        except ValueError:  # binascii.Error: not base64
            key = b""
        if len(key) != 32:
            raise ValueError(
                f"{path} does not hold a 256-bit key (base64); restore it from a backup, or remove it "
                "and create the AccessKeys again (their secrets cannot be read without it)"
            ) from None
        return key
    key = AESGCM.generate_key(bit_length=256)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key


class AccessKeyStore:
    def __init__(self, engine: Engine, encryption_key: bytes):
        self.engine = engine
        self._aead = AESGCM(encryption_key)
        self._inserts = 0

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    # -- keys ------------------------------------------------------------------------------
    def create(self, read_only: bool, description: str = "") -> NewAccessKey:
        key_id = ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                access_keys.insert().values(
                    id=key_id,
                    secret=base64.b64encode(sealed).decode(),
                    read_only=read_only,
                    description=description,
                    created_at=now,
                )
            )
        return NewAccessKey(AccessKey(key_id, read_only, description, now), secret)

    def list(self) -> list[AccessKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(access_keys).order_by(access_keys.c.created_at)).all()
        return [_key(r._mapping) for r in rows]

    def lookup(self, key_id: str) -> tuple[AccessKey, str]:
        """The key and its secret (decrypted), for checking a signature."""
        with self.engine.connect() as conn:
            row = conn.execute(select(access_keys).where(access_keys.c.id == key_id)).first()
        if row is None:
            raise AccessKeyNotFound(key_id)
        sealed = base64.b64decode(row.secret)
        secret = self._aead.decrypt(sealed[:12], sealed[12:], key_id.encode()).decode()
        return _key(row._mapping), secret

    def revoke(self, key_id: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(delete(access_keys).where(access_keys.c.id == key_id)).rowcount == 0:
                raise AccessKeyNotFound(key_id)
            conn.execute(delete(signature_nonces).where(signature_nonces.c.key_id == key_id))

    # -- nonces ----------------------------------------------------------------------------
    def use_nonce(self, key_id: str, nonce: str, keep_s: float) -> bool:
        """Record a signature nonce for `keep_s` seconds; False when it was used already."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    signature_nonces.insert().values(key_id=key_id, nonce=nonce, expires_at=now + keep_s)
                )
        except IntegrityError:
            return False
        self._inserts += 1
        if self._inserts % PRUNE_EVERY == 0:
            with self.engine.begin() as conn:
                conn.execute(delete(signature_nonces).where(signature_nonces.c.expires_at < now))
        return True


def _key(row: object) -> AccessKey:
    m = dict(row)  # type: ignore[call-overload]
    return AccessKey(m["id"], bool(m["read_only"]), m["description"] or "", float(m["created_at"]))
