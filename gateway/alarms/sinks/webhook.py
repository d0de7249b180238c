"""Webhook sink: POST each alarm event, signed, to one HTTP(S) receiver.

The receiver authenticates us with the HMAC headers of :mod:`gateway.alarms.signing`
and deduplicates on ``Idempotency-Key`` (the outbox may send an event again after
a timeout that the receiver did in fact process). Only the status line decides
the outcome; the response body is never read, so a chatty receiver costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, NoReturn
from urllib.parse import urlsplit

import aiohttp

from gateway.alarms.signing import ALARM_ID_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from gateway.alarms.sinks.base import OutboundMessage
from gateway.alarms.sinks.health import ReportsHealth, SinkHealth
from gateway.errors import ConfigError, DeliveryError

__all__ = ["CONTENT_TYPE", "IDEMPOTENCY_HEADER", "WebhookSink", "is_transient_status"]

log = logging.getLogger("kgw.alarms.webhook")

CONTENT_TYPE: Final = "application/json; charset=utf-8"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
USER_AGENT: Final = "kgw-gateway"
# Statuses that mean "try again later": request timeout, too early, too many requests, and every 5xx.
_TRANSIENT_4XX: Final = frozenset({408, 425, 429})
_GRACE: Final = 1.0  # our own guard beyond aiohttp's total timeout


def is_transient_status(status: int) -> bool:
    """Whether a non-2xx answer may succeed if the same request is sent again later."""
    return status in _TRANSIENT_4XX or 500 <= status <= 599


class WebhookSink(ReportsHealth):
    """Delivers by POST; 2xx is the acknowledgement.

    Error reasons: unreachable, timeout, http_3xx, http_4xx, http_5xx.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        timeout: float = 5.0,
        max_inflight: int = 32,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhook URL must be http:// or https:// with a host, not {url!r}")
        secret_bytes = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not secret_bytes:
            raise ConfigError("webhook secret must not be empty (receivers verify every request with it)")
        if timeout <= 0 or max_inflight < 1:
            raise ConfigError("webhook timeout must be positive and max_inflight at least 1")
        self.url = url
        self.timeout = timeout
        self.max_inflight = max_inflight
        self._secret = secret_bytes
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self._health = SinkHealth(self.name, log)
        self._closed = False

    def __repr__(self) -> str:
        return f"WebhookSink(url={self.url!r}, timeout={self.timeout})"  # never the secret

    # --- metrics ----------------------------------------------------------------------------

    # --- Sink protocol --------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to prepare: the session is created on the first delivery."""

    def headers_for(self, message: OutboundMessage, timestamp: int) -> dict[str, str]:
        """The request headers, signature included (public so tests and docs can show them)."""
        return {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self._secret, timestamp, message.body),
            TIMESTAMP_HEADER: str(timestamp),
            ALARM_ID_HEADER: message.alarm_id,
            EVENT_HEADER: message.event.value,
            IDEMPOTENCY_HEADER: f"{message.alarm_id}:{message.event.value}",
        }

    async def deliver(self, message: OutboundMessage) -> None:
        """POST once; return on 2xx, raise :class:`DeliveryError` otherwise."""
        if any(c in message.alarm_id for c in "\r\n\x00"):
            raise DeliveryError(f"alarm id {message.alarm_id!r} cannot go in an HTTP header", permanent=True)
        session = self._get_session()
        headers = self.headers_for(message, int(self._clock()))
        try:
            async with (
                asyncio.timeout(self.timeout + _GRACE),
                session.post(
                    self.url,
                    data=message.body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response,
            ):
                status = response.status
        except TimeoutError:  # aiohttp's ServerTimeoutError is one too
            self._failed("timeout", f"no answer within {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            self._failed("unreachable", f"receiver unreachable: {type(exc).__name__}: {exc}")
        if 200 <= status <= 299:
            self._health.ok()
            return
        reason = f"http {status}"
        key = f"http_{status // 100}xx"
        if is_transient_status(status):
            self._failed(key, reason)
        if 300 <= status <= 399:
            reason += " (redirects are not followed)"
        self._health.rejected(key, reason)
        raise DeliveryError(reason, permanent=True)

    def _failed(self, key: str, reason: str) -> NoReturn:
        self._health.failed(key, reason)
        raise DeliveryError(reason)

    async def close(self) -> None:
        """Close the session if we created it."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._own_session and not session.closed:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise DeliveryError("webhook sink is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_inflight),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session
