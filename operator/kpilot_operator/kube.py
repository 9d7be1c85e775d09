"""A small async Kubernetes API client over aiohttp, authenticated the way Kopf logs in.

Kopf's own client is private, and the official `kubernetes` client is synchronous; the operator
only needs GET/LIST/PATCH on a handful of paths, with the JSON-patch content type under control.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import tempfile
from typing import Any

import aiohttp
import kopf


class ApiError(Exception):
    """An HTTP error from the API server; `status` is the code (0 for a transport failure)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}" if status else message)


def login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In a Pod: the ServiceAccount; elsewhere: the usual kubeconfig (KUBECONFIG, ~/.kube/config)."""
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials: neither a ServiceAccount nor a kubeconfig")
    return info


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    else:
        ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        if ca_data and "BEGIN" not in ca_data:
            ca_data = base64.b64decode(ca_data).decode()
        ctx = ssl.create_default_context(cafile=info.ca_path, cadata=ca_data)
    cert, key = info.certificate_path, info.private_key_path
    with tempfile.TemporaryDirectory() as tmp:   # ssl loads chains from files only
        if info.certificate_data and not cert:
            cert = f"{tmp}/tls.crt"
            open(cert, "wb").write(_pem(info.certificate_data))
        if info.private_key_data and not key:
            key = f"{tmp}/tls.key"
            open(key, "wb").write(_pem(info.private_key_data))
        if cert:
            ctx.load_cert_chain(cert, key)
    return ctx


def _pem(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return raw if b"BEGIN" in raw else base64.b64decode(raw)


class KubeApi:
    """GET / LIST / PATCH / POST against one API server; one aiohttp session for the operator."""

    def __init__(self, info: kopf.ConnectionInfo, *, timeout_s: float = 30.0):
        self.info = info
        self.server = info.server.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.info.token:
            headers["Authorization"] = f"{self.info.scheme or 'Bearer'} {self.info.token}"
        elif self.info.username and self.info.password:
            headers["Authorization"] = aiohttp.BasicAuth(self.info.username, self.info.password).encode()
        return headers

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=_ssl_context(self.info), limit=32)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers(),
                                                  timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                      content_type: str | None = None) -> dict:
        session = await self.session()
        headers = {"Content-Type": content_type} if content_type else None
        try:
            async with session.request(method, self.server + path, params=params, json=json,
                                       headers=headers) as rsp:
                if rsp.status >= 400:
                    text = await rsp.text()
                    try:
                        message = (await rsp.json(content_type=None)).get("message", text)
                    except ValueError:
                        message = text
                    raise ApiError(rsp.status, f"{method} {path}: {message}"[:500])
                return await rsp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ApiError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from None

    async def get(self, path: str, **params: str) -> dict:
        return await self.request("GET", path, params=params or None)

    async def json_patch(self, path: str, ops: list[dict]) -> dict:
        return await self.request("PATCH", path, json=ops, content_type="application/json-patch+json")

    async def merge_patch(self, path: str, patch: dict) -> dict:
        return await self.request("PATCH", path, json=patch, content_type="application/merge-patch+json")
