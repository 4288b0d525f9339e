"""Authentication of a request against a service token (pure functions, no I/O).

Accepted forms of the `Authorization` header (eas-reference section 3):

- `<token>`: the raw token (curl examples, PAI Predictor, LangChain);
- `Bearer <token>`: the OpenAI SDK and gRPC form;
- `EAS <base64(HMAC-SHA1(token, string_to_sign))>`: what every official eas-prediction SDK sends,
  with string_to_sign = "VERB\\nContent-MD5\\nContent-Type\\nDate\\nresource" (stripped), the
  header values taken exactly as received. The Python SDK signs verb POST and resource
  `/api/predict/<service>`; the Go SDK appends the request path; the Java SDK signs path and
  query. All three resources are accepted. The Date is not checked against the clock (the
  Python SDK writes local time labelled GMT).

Every comparison uses `hmac.compare_digest`. Nothing here logs or returns the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from openeas.gateway.routing import PREFIX, path_of

_EAS = b"EAS "
_BEARER = b"bearer "


def string_to_sign(
    verb: bytes, content_md5: bytes, content_type: bytes, date: bytes, resource: bytes
) -> bytes:
    return b"%s\n%s\n%s\n%s\n%s" % (verb, content_md5, content_type, date, resource)


def eas_signature(token: bytes, to_sign: bytes) -> bytes:
    """base64(HMAC-SHA1(token, to_sign.strip())): the value after `EAS ` in the header."""
    digest = hmac.new(token, to_sign.strip(), hashlib.sha1).digest()
    return base64.b64encode(digest)


def header_value(headers: Sequence[tuple[bytes, bytes]], lname: bytes) -> bytes:
    """The first value of header `lname` (lower case), or b"" when absent."""
    for name, value in headers:
        if len(name) == len(lname) and name.lower() == lname:
            return value
    return b""


def is_authorized(
    authorization: bytes | None,
    token: bytes,
    method: bytes,
    url: bytes,
    service: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> bool:
    """True when `authorization` (the header value as received) proves knowledge of `token`."""
    if not authorization or not token:
        return False
    if authorization.startswith(_EAS):
        return _eas_ok(authorization[4:].strip(), token, method, url, service, headers)
    if authorization[:7].lower() == _BEARER:
        return hmac.compare_digest(authorization[7:].strip(), token)
    return hmac.compare_digest(authorization.strip(), token)


def is_authorized_either(
    authorization: bytes | None,
    token: bytes,
    old_token: bytes,
    method: bytes,
    url: bytes,
    service: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> bool:
    """`is_authorized` for the current token, or the previous one while a rotation keeps it
    (`old_token` b"" when none: no second comparison on the usual path)."""
    if is_authorized(authorization, token, method, url, service, headers):
        return True
    return bool(old_token) and is_authorized(authorization, old_token, method, url, service, headers)


def _eas_ok(
    signature: bytes,
    token: bytes,
    method: bytes,
    url: bytes,
    service: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> bool:
    md5 = header_value(headers, b"content-md5")
    ctype = header_value(headers, b"content-type")
    date = header_value(headers, b"date")
    path = path_of(url)
    resources = [PREFIX + service]
    if path != resources[0]:
        resources.append(path)
    if url != path:
        resources.append(url)
    verbs = [method] if method == b"POST" else [method, b"POST"]
    ok = False
    for verb in verbs:
        for resource in resources:
            expected = eas_signature(token, string_to_sign(verb, md5, ctype, date, resource))
            # no early exit: every candidate is compared, so timing does not say which matched
            ok |= hmac.compare_digest(signature, expected)
    return ok
