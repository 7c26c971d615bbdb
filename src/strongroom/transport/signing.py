"""Request signing between accounts (``SR1-HMAC-SHA256``), specified in docs/wire-protocol.md.

Every request carries the caller's access key id, a timestamp, a random nonce and the SHA-256 of its
body, all covered by an HMAC-SHA256 under the credential's secret. The secret itself never crosses
the wire, so a request seen by an eavesdropper cannot be altered or turned into another request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from strongroom.clock import system_clock

ALGORITHM = "SR1-HMAC-SHA256"
DATE_HEADER = "x-strongroom-date"
NONCE_HEADER = "x-strongroom-nonce"
BODY_HEADER = "x-strongroom-content-sha256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_SECONDS = 300
_AUTHORIZATION = re.compile(rf"^{ALGORITHM} Credential=(?P<key>[A-Z0-9]{{20}}), Signature=(?P<sig>[0-9a-f]{{64}})$")


@dataclass(frozen=True)
class SignedParts:
    key_id: str
    signature: str
    timestamp: str
    nonce: str
    body_sha256: str


def canonical_request(method: str, path: str, query: str, timestamp: str, nonce: str, body_sha256: str) -> bytes:
    pairs = sorted(part for part in query.split("&") if part)
    return "\n".join(
        [ALGORITHM, method.upper(), quote(path, safe="/-_.~%"), "&".join(pairs), timestamp, nonce, body_sha256]
    ).encode()


def signature(secret: str, canonical: bytes) -> str:
    return hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest()


def sign_headers(key_id: str, secret: str, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
    timestamp = system_clock().strftime(DATE_FORMAT)
    nonce = secrets.token_hex(16)
    body_sha256 = hashlib.sha256(body).hexdigest()
    sig = signature(secret, canonical_request(method, path, query, timestamp, nonce, body_sha256))
    return {
        "authorization": f"{ALGORITHM} Credential={key_id}, Signature={sig}",
        DATE_HEADER: timestamp,
        NONCE_HEADER: nonce,
        BODY_HEADER: body_sha256,
    }


def parse_signed(headers: dict[str, str]) -> SignedParts | None:
    """The signature fields of a request, or None when it is not (well-formed and) signed."""
    match = _AUTHORIZATION.match(headers.get("authorization", ""))
    timestamp, nonce, body = (headers.get(h, "") for h in (DATE_HEADER, NONCE_HEADER, BODY_HEADER))
    well_formed = re.fullmatch(r"[0-9a-f]{32}", nonce) and re.fullmatch(r"[0-9a-f]{64}", body)
    if not match or not timestamp or not well_formed:
        return None
    return SignedParts(match["key"], match["sig"], timestamp, nonce, body)


def signed_time(timestamp: str) -> datetime | None:
    """The moment a request says it was signed at, or None when the date header is malformed."""
    try:
        return datetime.strptime(timestamp, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def skew_seconds(timestamp: str, now: datetime | None = None) -> float | None:
    moment = signed_time(timestamp)
    if moment is None:
        return None
    return abs(((now or system_clock()) - moment).total_seconds())


def unix_time(timestamp: str) -> int | None:
    moment = signed_time(timestamp)
    return None if moment is None else int(moment.timestamp())
