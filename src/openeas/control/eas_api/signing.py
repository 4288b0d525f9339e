"""Checking the request signatures of Alibaba Cloud's SDKs, exactly as they sign (no I/O here).

Read from the installed `alibabacloud_tea_openapi` 0.4.x (`client.py`: `do_request`,
`do_roarequest`; `utils.py`: `get_authorization`, `get_canonical_query_string`,
`get_canonicalized_headers`, `get_string_to_sign`, `get_roasignature`) as used by
`alibabacloud-eas20210701` 7.x:

**ACS3-HMAC-SHA256** (the default): the SDK sets `host`, `x-acs-version`, `x-acs-action`,
`user-agent`, `x-acs-date` (`%Y-%m-%dT%H:%M:%SZ`, UTC), `x-acs-signature-nonce`, `accept`,
`content-type` (with a body) and `x-acs-content-sha256` (hex SHA-256 of the body), and sends

    Authorization: ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<h1;h2;...>,Signature=<hex>

    canonical request = METHOD \n path \n canonical query \n canonical headers \n
                        signed headers \n hex sha256(body)
    path              = the request path as sent (percent-encoded; "/" if empty)
    canonical query   = k=quote(v, safe="~") joined by "&", keys sorted (keys not encoded)
    canonical headers = "name:value\n" per signed header, names lowercase and sorted, values
                        stripped, several values of one name sorted and joined by ","
    signature         = hex HMAC-SHA256(secret, "ACS3-HMAC-SHA256\n" + hex sha256(canonical request))

**ROA HMAC-SHA1** (`signature_algorithm="v2"` in the SDK's Config): headers `date` (RFC 1123,
GMT), `x-acs-signature-nonce`, `x-acs-signature-method: HMAC-SHA1`, and

    Authorization: acs <id>:<base64 HMAC-SHA1(secret, string to sign)>
    string to sign = METHOD \n accept \n content-md5 \n content-type \n date \n
                     "name:value\n" for each x-acs-* header, sorted by name \n-less +
                     path ["?" + sorted "k=v" (raw values; "k" alone when empty) joined by "&"]

The server recomputes the signature from the request as received and compares in constant
time. On top of what the signature proves, a request is accepted only when its date is within
`window_s` (15 minutes, Alibaba Cloud's rule) of the server's clock and its nonce was not seen
within that window (the caller records nonces: see `store/access_keys.py`). For ACS3 the
signed headers must include `host`, `x-acs-date`, `x-acs-signature-nonce` and
`x-acs-content-sha256`, and the body must hash to the last one: the body is covered. ROA's
string to sign has no body hash (Content-MD5 is not sent by the SDK), so a ROA signature does not
cover the body; the docs say to prefer ACS3, the SDK's default.

Error messages name what is wrong and never contain a secret or a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

ACS3 = "ACS3-HMAC-SHA256"
ROA = "acs"
WINDOW_S = 15 * 60
ACS3_REQUIRED_HEADERS = ("host", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce")
MAX_NONCE_LENGTH = 128


class SignatureError(Exception):
    """A refused signature: EAS's HTTP status, error code and a message that says what to do."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """What the signature covers, as received."""

    method: str
    raw_path: str  # percent-encoded, as sent
    query: Sequence[tuple[str, str]]  # decoded (name, value) pairs, blank values kept
    headers: Sequence[tuple[str, str]]  # (lowercase name, value), every occurrence
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str:
        values = self.header_values(name)
        return values[0] if values else ""


@dataclass(frozen=True, slots=True)
class Authorization:
    algorithm: str  # ACS3 or ROA
    key_id: str
    signature: str
    signed_headers: tuple[str, ...] = ()


def looks_signed(header: str) -> bool:
    """Whether an Authorization header is one of the SDK's signature forms."""
    return header.startswith(ACS3 + " ") or header.startswith(ROA + " ")


def parse_authorization(header: str) -> Authorization:
    scheme, _, rest = header.strip().partition(" ")
    if scheme == ACS3:
        fields: dict[str, str] = {}
        for part in rest.split(","):
            name, sep, value = part.strip().partition("=")
            if sep:
                fields[name.strip()] = value.strip()
        missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
        if missing:
            raise SignatureError(
                400,
                "IncompleteSignature",
                f"the {ACS3} Authorization header lacks {', '.join(missing)}; expected "
                f"`{ACS3} Credential=<AccessKeyId>,SignedHeaders=<h1;h2>,Signature=<hex>`",
            )
        signed = tuple(fields["SignedHeaders"].split(";"))
        return Authorization(ACS3, fields["Credential"], fields["Signature"], signed)
    if scheme == ROA:
        key_id, sep, signature = rest.strip().rpartition(":")
        if not sep or not key_id or not signature:
            raise SignatureError(
                400, "IncompleteSignature", "expected `Authorization: acs <AccessKeyId>:<signature>`"
            )
        return Authorization(ROA, key_id, signature)
    raise SignatureError(
        400,
        "InvalidSignatureMethod",
        f"unknown signature scheme {scheme[:32]!r}; openeas checks {ACS3} (the SDK's default) and "
        "the ROA `acs <id>:<signature>` form (HMAC-SHA1)",
    )


# -- ACS3-HMAC-SHA256 ------------------------------------------------------------------------


def canonical_query(query: Sequence[tuple[str, str]]) -> str:
    return "&".join(
        f"{k}={quote(v, safe='~', encoding='utf-8')}" for k, v in sorted(query, key=lambda p: p[0])
    )


def canonical_headers(req: ReceivedRequest, signed: Sequence[str]) -> str:
    out = []
    for name in signed:
        values = sorted(v.strip() for v in req.header_values(name))
        out.append(f"{name}:{','.join(values)}\n")
    return "".join(out)


def acs3_string_to_sign(req: ReceivedRequest, signed: Sequence[str], payload_hash: str) -> str:
    canonical_request = "\n".join(
        [
            req.method.upper(),
            req.raw_path or "/",
            canonical_query(req.query),
            canonical_headers(req, signed),
            ";".join(signed),
            payload_hash,
        ]
    )
    return f"{ACS3}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"


def acs3_signature(string_to_sign: str, secret: str) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


# -- ROA HMAC-SHA1 ---------------------------------------------------------------------------


def roa_string_to_sign(req: ReceivedRequest) -> str:
    head = "\n".join(
        [
            req.method.upper(),
            req.header("accept"),
            req.header("content-md5"),
            req.header("content-type"),
            req.header("date"),
        ]
    )
    acs_headers = sorted({k for k, _ in req.headers if k.startswith("x-acs-")})
    canon = "".join(f"{k}:{req.header(k)}\n" for k in acs_headers)
    resource = req.raw_path
    if req.query:
        resource += "?" + "&".join(
            k if v == "" else f"{k}={v}" for k, v in sorted(req.query, key=lambda p: p[0])
        )
    return f"{head}\n{canon}{resource}"


def roa_signature(string_to_sign: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# -- checks ----------------------------------------------------------------------------------


def request_time(auth: Authorization, req: ReceivedRequest) -> datetime:
    if auth.algorithm == ACS3:
        raw = req.header("x-acs-date")
        try:
            return datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise SignatureError(
                400,
                "InvalidTimeStamp.Format",
                f"x-acs-date {raw[:40]!r} is not a UTC time such as 2026-01-31T08:00:00Z",
            ) from None
    raw = req.header("date")
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        raise SignatureError(
            400,
            "InvalidTimeStamp.Format",
            f"Date {raw[:40]!r} is not an RFC 1123 date (…, 31 Jan 2026 08:00:00 GMT)",
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def check_fresh(auth: Authorization, req: ReceivedRequest, now: datetime, window_s: float = WINDOW_S) -> str:
    """The request's date is within the window; returns its nonce (checked for shape only)."""
    when = request_time(auth, req)
    skew = (now - when).total_seconds()
    if abs(skew) > window_s:
        raise SignatureError(
            400,
            "InvalidTimeStamp.Expired",
            f"the request's date ({when.isoformat()}) is {abs(skew):.0f} s "
            f"{'behind' if skew > 0 else 'ahead of'} the server's clock "
            f"({now.isoformat(timespec='seconds')}); "
            f"signed requests are accepted within {window_s:.0f} s: sync the client's clock (NTP) and retry",
        )
    nonce = req.header("x-acs-signature-nonce")
    if not nonce or len(nonce) > MAX_NONCE_LENGTH:
        raise SignatureError(
            400,
            "MissingSignatureNonce",
            f"send a unique x-acs-signature-nonce (1 to {MAX_NONCE_LENGTH} characters) with each request",
        )
    return nonce


def check_signature(auth: Authorization, req: ReceivedRequest, secret: str) -> None:
    """Recompute the signature with `secret` and compare in constant time."""
    if auth.algorithm == ACS3:
        missing = [h for h in ACS3_REQUIRED_HEADERS if h not in auth.signed_headers]
        if missing:
            raise SignatureError(
                400,
                "IncompleteSignature",
                f"SignedHeaders must include {', '.join(missing)} (the SDK signs them)",
            )
        if list(auth.signed_headers) != sorted(set(auth.signed_headers)):
            raise SignatureError(
                400, "IncompleteSignature", "SignedHeaders must be lowercase, sorted, each once"
            )
        body_hash = hashlib.sha256(req.body).hexdigest()
        if not hmac.compare_digest(req.header("x-acs-content-sha256").lower().encode(), body_hash.encode()):
            raise SignatureError(
                400,
                "ContentSHA256NotMatch",
                "x-acs-content-sha256 is not the SHA-256 of the body received; send the body that was signed",
            )
        sts = acs3_string_to_sign(req, auth.signed_headers, body_hash)
        expected = acs3_signature(sts, secret)
        got = auth.signature.lower()
    else:
        sts = roa_string_to_sign(req)
        expected = roa_signature(sts, secret)
        got = auth.signature
    if not hmac.compare_digest(got.encode(), expected.encode()):
        # shown to the caller to debug its signer; lines of credential headers (STS tokens) hidden
        shown = "\\n".join(
            line.partition(":")[0] + ":(hidden)" if "token" in line.partition(":")[0] else line
            for line in sts.split("\n")
        )
        raise SignatureError(
            400,
            "SignatureDoesNotMatch",
            "the request signature does not match: check the AccessKey secret, and that nothing between "
            f"the client and openeas rewrites the path, query or signed headers; the server's string to "
            f"sign is: {shown}",
        )
