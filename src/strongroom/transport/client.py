"""The client side of the account API: signed HTTP requests to another account's ``strongroom serve``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from strongroom.errors import ERRORS_BY_CODE, RemoteError, StrongroomError
from strongroom.transport import signing, wire

if TYPE_CHECKING:  # httpx is loaded when a client is made: most commands never talk to another account
    import httpx

API_PREFIX = "/v1"
DEFAULT_TIMEOUT_SECONDS = 120.0


class AccountClient:
    """One remote account, reached with one credential. Counts the bytes it puts on the wire."""

    def __init__(
        self, endpoint: str, key_id: str, secret: str, *, ca_file: str | None = None, timeout: float | None = None
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(
                f"'{endpoint}' is not an account endpoint URL", hint="Endpoints look like https://host:8443"
            )
        self.endpoint = endpoint.rstrip("/")
        self._key_id = key_id
        self._secret = secret
        verify: Any = ca_file if ca_file else True
        import httpx

        self._http = httpx.Client(base_url=self.endpoint, verify=verify, timeout=timeout or DEFAULT_TIMEOUT_SECONDS)
        self.bytes_sent = 0
        self.bytes_received = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AccountClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Transport ---------------------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        payload: Any = None,
        body: bytes | None = None,
        query: dict[str, Any] | None = None,
    ) -> httpx.Response:
        data = body if body is not None else (json.dumps(payload).encode() if payload is not None else b"")
        full_path = API_PREFIX + path
        query_string = urlencode(sorted((query or {}).items()))
        headers = signing.sign_headers(self._key_id, self._secret, method, full_path, query_string, data)
        headers["content-type"] = "application/octet-stream" if body is not None else "application/json"
        url = full_path + (f"?{query_string}" if query_string else "")
        import httpx

        try:
            response = self._http.request(method, url, content=data, headers=headers)
        except httpx.TimeoutException:
            raise RemoteError(f"account endpoint {self.endpoint} did not answer in time") from None
        except httpx.HTTPError as exc:
            reason = _reason(exc)
            hint = (
                "Give the CA that signed the endpoint's certificate with 'strongroom accounts add --ca-file'"
                if "certificate verify failed" in reason
                else "Check the endpoint given to 'strongroom accounts add' and that 'strongroom serve' runs there"
            )
            raise RemoteError(f"cannot reach account endpoint {self.endpoint}: {reason}", hint=hint) from None
        self.bytes_sent += len(data) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + len(url)
        self.bytes_received += len(response.content)
        if response.status_code >= 400:
            raise _error_from(response, self.endpoint)
        return response

    def json(self, method: str, path: str, payload: Any = None, **query: Any) -> Any:
        response = self.call(method, path, payload=payload, query=query or None)
        try:
            return response.json() if response.content else None
        except ValueError:
            raise RemoteError(f"account endpoint {self.endpoint} answered with something that is not JSON") from None

    # The account API -----------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return dict(self.json("GET", "/whoami"))

    def describe_vault(self, vault: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/vaults/{vault}"))

    def list_recovery_points(self, vault: str) -> list[dict[str, Any]]:
        return list(self.json("GET", f"/vaults/{vault}/recovery-points")["recovery_points"])

    def get_recovery_point(self, rp_id: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/recovery-points/{rp_id}"))

    def delete_recovery_point(self, rp_id: str) -> None:
        self.json("DELETE", f"/recovery-points/{rp_id}")

    def update_recovery_point_lifecycle(self, rp_id: str, delete_after_days: int | None) -> dict[str, Any]:
        return dict(self.json("PUT", f"/recovery-points/{rp_id}/lifecycle", {"delete_after_days": delete_after_days}))

    def put_access_policy(self, vault: str, document: dict[str, Any] | None) -> None:
        self.json("PUT", f"/vaults/{vault}/access-policy", {"policy": document})

    def put_vault_lock(self, vault: str, **settings: int | None) -> None:
        self.json("PUT", f"/vaults/{vault}/lock", settings)

    def delete_vault_lock(self, vault: str) -> None:
        self.json("DELETE", f"/vaults/{vault}/lock")

    def delete_vault(self, vault: str) -> None:
        self.json("DELETE", f"/vaults/{vault}")

    # Copy into a vault of the remote account (push) --------------------------------------------------
    def start_copy_in(self, vault: str, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", f"/vaults/{vault}/copy-in", request))

    def missing(self, session: str, ids: list[bytes]) -> list[bool]:
        answer = self.call("POST", f"/copy-in/{session}/missing", body=wire.encode_ids(ids)).content
        if len(answer) != len(ids):
            raise RemoteError("the destination answered a chunk list of the wrong length")
        return [flag == 1 for flag in answer]

    def put_chunks(self, session: str, frames: bytes) -> None:
        self.call("POST", f"/copy-in/{session}/chunks", body=frames)

    def append_refs(self, session: str, stream: str, refs: list[tuple[bytes, int]]) -> None:
        self.call("POST", f"/copy-in/{session}/streams/{stream}", body=wire.encode_refs(refs))

    def commit_copy_in(self, session: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/copy-in/{session}/commit"))

    def abort_copy_in(self, session: str, reason: str) -> None:
        self.json("POST", f"/copy-in/{session}/abort", {"reason": reason})

    # WAL copied with a cluster's base backups (push) --------------------------------------------------
    def wal_names(self, vault: str, system: str, source_vault_arn: str) -> list[str]:
        answer = self.json("GET", f"/vaults/{vault}/wal/{system}", source_vault_arn=source_vault_arn)
        names = answer.get("names") if isinstance(answer, dict) else None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise RemoteError("the destination answered a WAL name list that is not a list of names")
        return names

    def put_wal(self, vault: str, system: str, name: str, query: dict[str, Any], body: bytes) -> str:
        response = self.call("PUT", f"/vaults/{vault}/wal/{system}/{name}", body=body, query=query)
        try:
            return str(response.json()["outcome"])
        except (ValueError, KeyError, TypeError):
            raise RemoteError("the destination answered a WAL copy without an outcome") from None

    def put_continuous(self, vault: str, system: str, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", f"/vaults/{vault}/wal/{system}/continuous", request))

    def wal_out_names(self, rp_id: str, destination_vault_arn: str) -> dict[str, Any]:
        answer = self.json("GET", f"/recovery-points/{rp_id}/wal", destination_vault_arn=destination_vault_arn)
        names = answer.get("names") if isinstance(answer, dict) else None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise RemoteError("the other account answered a WAL name list that is not a list of names")
        return dict(answer)

    def wal_out_file(self, rp_id: str, name: str, destination_vault_arn: str) -> tuple[bytes, str, str]:
        """A zstd frame of the WAL file, the size and the modification time the other account states."""
        query = {"destination_vault_arn": destination_vault_arn}
        response = self.call("GET", f"/recovery-points/{rp_id}/wal/{name}", query=query)
        size = response.headers.get("x-strongroom-wal-size", "")
        return response.content, size, response.headers.get("x-strongroom-wal-modified", "")

    # Copy out of a vault of the remote account (pull) --------------------------------------------------
    def start_copy_out(self, rp_id: str, destination_vault_arn: str) -> dict[str, Any]:
        payload = {"destination_vault_arn": destination_vault_arn}
        return dict(self.json("POST", f"/recovery-points/{rp_id}/copy-out", payload))

    def copy_out_refs(self, session: str, stream: str, start: int, count: int) -> list[tuple[bytes, int]]:
        body = self.call("GET", f"/copy-out/{session}/streams/{stream}", query={"start": start, "count": count}).content
        return wire.decode_refs(body)

    def copy_out_chunks(self, session: str, ids: list[bytes]) -> bytes:
        return self.call("POST", f"/copy-out/{session}/chunks", body=wire.encode_ids(ids)).content

    def end_copy_out(self, session: str) -> None:
        self.json("DELETE", f"/copy-out/{session}")


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1]


def _error_from(response: httpx.Response, endpoint: str) -> StrongroomError:
    try:
        error = response.json()["error"]
        code, message, hint = str(error["code"]), str(error["message"]), error.get("hint") or None
    except (ValueError, KeyError, TypeError):
        return RemoteError(f"account endpoint {endpoint} answered HTTP {response.status_code} without an error body")
    cls = ERRORS_BY_CODE.get(code, RemoteError)
    return cls(message, hint=hint)
