"""HTTP sessions for storage that refuse loopback, link-local and private peers, checked on the connected socket."""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from renderhub.addresses import forbidden

POOL_SIZE = 4
# azure-core's own adapter sends bodies in 32 KiB blocks rather than http.client's 8 KiB; uploads are large.
SEND_BLOCK = 64 * 1024


_SIGNATURE = re.compile(r"\b(sig=)[^&\s\"']*", re.IGNORECASE)


class _RedactSignatures(logging.Filter):
    """Blanks SAS signatures in urllib3's debug lines, which show each request's whole URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sig=" in message.lower():
            record.msg, record.args = _SIGNATURE.sub(r"\1REDACTED", message), None
        return True


_REDACT = _RedactSignatures()


class PrivatePeer(Exception):
    """A storage host that turned out to be a loopback, link-local or private address."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host


def is_forbidden(address: str) -> bool:
    """Whether an IP address is loopback, link-local, private or otherwise not global: the render server's rule
    for model URLs (renderhub.addresses), so that both refuse the same addresses."""
    return forbidden(address)


def _checked(sock: socket.socket, host: str) -> socket.socket:
    # The address actually connected to, not a name resolved earlier: a DNS answer that changes in between
    # (rebinding) cannot slip a private address past the check.
    if is_forbidden(str(sock.getpeername()[0])):
        sock.close()
        raise PrivatePeer(host)
    return sock


class _CheckedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _checked(super()._new_conn(), self.host)


class _CheckedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _checked(super()._new_conn(), self.host)


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


def session(*, allow_private: bool) -> Any:
    """A requests session for azure-core's transport: no retries of its own (the storage client retries), and
    unless allow_private, a connection to a non-global address fails with PrivatePeer. Through a proxy the
    peer is the proxy, so the check is the proxy's business there."""
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    if _REDACT not in urllib3_log.filters:
        urllib3_log.addFilter(_REDACT)
    adapter = HTTPAdapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    adapter.init_poolmanager(POOL_SIZE, POOL_SIZE, blocksize=SEND_BLOCK)
    if not allow_private:
        adapter.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}
    http = requests.Session()
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http
