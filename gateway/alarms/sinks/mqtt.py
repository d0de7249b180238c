"""MQTT sink: publish alarms to the police integration broker (QoS 1, persistent session).

One :class:`aiomqtt.Client` is shared by every concurrent :meth:`MqttSink.deliver`;
it is connected lazily under a lock and thrown away on any error, so the next
attempt reconnects (the outbox does the retrying, with backoff). The session is
MQTT 3.1.1 with ``clean_session=False`` and a fixed client id, as the police
side expects one stable identity per gateway.

``aiomqtt.Client.publish(..., qos=1)`` returns only once paho-mqtt has called
``on_publish`` for the message id, which for QoS 1 happens on PUBACK; it does
not notice a lost connection though (it would wait for its timeout), so
:meth:`MqttSink.deliver` races the publish against a per-connection "lost"
future to fail fast when the broker goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urlsplit

import aiomqtt

from gateway.alarms.model import DeliveryEvent
from gateway.alarms.sinks.base import OutboundMessage
from gateway.alarms.sinks.health import ReportsHealth, SinkHealth
from gateway.alarms.sinks.mqtt_client import MqttClient
from gateway.errors import ConfigError, DeliveryError

__all__ = ["DEFAULT_MQTT_PORT", "BrokerUnavailable", "MqttSink", "MqttTarget", "parse_mqtt_url", "topic_for"]

log = logging.getLogger("kgw.alarms.mqtt")
_CLIENT_LOG = logging.getLogger("kgw.alarms.mqtt.client")  # paho-mqtt's own chatter, under our name

DEFAULT_MQTT_PORT: Final = 1883
_KEEPALIVE: Final = 30  # seconds; paho pings so a silently dead broker is noticed
_CLOSE_TIMEOUT: Final = 2.0
# CONNACK codes meaning "bad credentials": MQTT 3.1.1 return codes 4 and 5, and the
# MQTT 5 reason codes paho-mqtt 2 converts them to (134, 135).
_AUTH_CODES: Final = frozenset({4, 5, 134, 135})


# --- configuration ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where the broker is; the password is kept out of ``repr`` so it never reaches a log."""

    host: str
    port: int = DEFAULT_MQTT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def redacted(self) -> str:
        """The URL for log lines: user shown, password replaced by ``***``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.username is None:
            return f"mqtt://{host}:{self.port}"
        secret = ":***" if self.password is not None else ""
        return f"mqtt://{self.username}{secret}@{host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse ``mqtt://[user:pass@]host[:port]``; anything else is a :class:`ConfigError`.

    TLS (``mqtts://``) is not supported yet and must not silently fall back
    to plain TCP, so every other scheme is refused.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid MQTT URL ({exc}); expected mqtt://[user:pass@]host[:port]") from None
    if parts.scheme.lower() != "mqtt":
        shown = parts.scheme or "no scheme"
        raise ConfigError(f"unsupported MQTT URL scheme {shown!r}; expected mqtt://[user:pass@]host[:port]")
    if not parts.hostname:
        raise ConfigError("MQTT URL has no host; expected mqtt://[user:pass@]host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("MQTT URL must not have a path, query or fragment; expected mqtt://[user:pass@]host[:port]")
    if port == 0:
        raise ConfigError("MQTT URL port must be 1-65535")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if not username and password is not None:
        raise ConfigError("MQTT URL has a password but no user name")
    return MqttTarget(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_MQTT_PORT,
        username=username or None,
        password=password,
    )


def _check_segment(segment: str, what: str) -> str:
    if not segment or any(c in segment for c in "/+#\x00"):
        raise ValueError(f"{what} {segment!r} cannot be an MQTT topic segment")
    return segment


def topic_for(message: OutboundMessage, prefix: str = "kgw") -> str:
    """``<prefix>/alarms/<district>/<kindergarten>``, ``<prefix>/escalations/...`` or, for a drill, ``<prefix>/drills/...``.

    A drill never goes to the alarm topic (issue 13): police integrations subscribed to
    ``kgw/alarms/#`` never see one, and a drill has no escalation.

    Raises ValueError when a segment would change the topic's shape (``/``)
    or is a wildcard (``+``, ``#``), which brokers refuse in PUBLISH.
    """
    if message.alarm.drill:
        kind = "drills"
    else:
        kind = "escalations" if message.event == DeliveryEvent.ESCALATED else "alarms"
    district = _check_segment(message.district_code, "district code")
    kindergarten = _check_segment(message.kindergarten_segment, "kindergarten id")
    return f"{prefix}/{kind}/{district}/{kindergarten}"


# --- health: shared by the sinks --------------------------------------------------------


# --- the sink ------------------------------------------------------------------------


class BrokerUnavailable(DeliveryError):
    """Connecting to the broker failed (always transient); ``key`` is the metrics reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


@dataclass(slots=True)
class _Connection:
    """One connected client and the future that resolves (with a reason) when it is lost."""

    client: MqttClient
    lost: asyncio.Future[str]
    watcher: asyncio.Task[None] | None = None


class MqttSink(ReportsHealth):
    """Publishes each alarm event once with QoS 1 and returns on PUBACK.

    Error reasons: unreachable, not_authorised, refused, timeout, publish_failed, rejected.
    """

    name = "mqtt"

    def __init__(
        self,
        target: str | MqttTarget,
        client_id: str,
        *,
        topic_prefix: str = "kgw",
        connect_timeout: float = 5.0,
        publish_timeout: float = 5.0,
        max_inflight: int = 200,
    ) -> None:
        self.target = parse_mqtt_url(target) if isinstance(target, str) else target
        if not client_id:
            raise ConfigError("MQTT client id must not be empty (the persistent session needs a fixed one)")
        if not topic_prefix or any(c in topic_prefix for c in "+#\x00"):
            raise ConfigError(f"invalid MQTT topic prefix {topic_prefix!r}")
        if connect_timeout <= 0 or publish_timeout <= 0 or max_inflight < 1:
            raise ConfigError("MQTT timeouts must be positive and max_inflight at least 1")
        self.client_id = client_id
        self.topic_prefix = topic_prefix.rstrip("/")
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.max_inflight = max_inflight
        self._health = SinkHealth(self.name, log)
        self._lock = asyncio.Lock()
        self._connection: _Connection | None = None
        self._attempts = 0  # connection attempts started; lets lock waiters share one failure
        self._last_connect_error: BrokerUnavailable | None = None
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()

    # --- metrics ---------------------------------------------------------------------------

    # --- Sink protocol ---------------------------------------------------------------------

    async def start(self) -> None:
        """Try to connect in the background so ``up`` is known early; never raises."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._warm_up(), name="kgw-mqtt-connect")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def deliver(self, message: OutboundMessage) -> None:
        """Publish with QoS 1; return on PUBACK, raise :class:`DeliveryError` otherwise."""
        try:
            topic = topic_for(message, self.topic_prefix)
        except ValueError as exc:
            raise DeliveryError(str(exc), permanent=True) from None
        connection = await self._connect()
        publish = asyncio.ensure_future(
            connection.client.publish(topic, message.body, qos=1, retain=False, timeout=math.inf)
        )
        try:
            waiting: set[asyncio.Future[Any]] = {publish, connection.lost}
            done, _ = await asyncio.wait(waiting, timeout=self.publish_timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            publish.cancel()
            raise
        if publish in done:
            try:
                publish.result()
            except aiomqtt.MqttError as exc:
                await self._fail(connection, "publish_failed", f"publish failed: {exc}")
            except ValueError as exc:  # paho refuses the topic or payload: sending again cannot help
                self._health.rejected("rejected", f"publish refused: {exc}")
                raise DeliveryError(f"publish refused: {exc}", permanent=True) from None
            self._health.ok()
            return
        publish.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await publish
        if connection.lost.done():
            await self._fail(
                connection, "publish_failed", f"connection lost during publish: {connection.lost.result()}"
            )
        await self._fail(connection, "timeout", f"no PUBACK within {self.publish_timeout:g} s")

    async def close(self) -> None:
        """Disconnect; in-flight deliveries fail with a transient error."""
        self._closed = True
        for task in list(self._background):
            task.cancel()
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await self._close_connection(connection, "sink closed")
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # --- connection ------------------------------------------------------------------------

    async def _warm_up(self) -> None:
        with contextlib.suppress(DeliveryError):
            await self._connect()

    async def _connect(self) -> _Connection:
        """The live connection, connecting if needed; concurrent callers share one attempt."""
        seen_attempts = self._attempts
        async with self._lock:
            if self._closed:
                raise DeliveryError("mqtt sink is closed")
            connection = self._connection
            if connection is not None and not connection.lost.done():
                return connection
            if connection is not None:
                self._connection = None
                await self._close_connection(connection, "lost")
            if self._attempts != seen_attempts and self._last_connect_error is not None:
                # An attempt that started while we waited for the lock just failed: share its verdict.
                error = self._last_connect_error
                self._health.failed(error.key, error.reason)
                raise BrokerUnavailable(error.key, error.reason)
            self._attempts += 1
            try:
                connection = await self._open()
            except BrokerUnavailable as exc:
                self._last_connect_error = exc
                self._health.failed(exc.key, exc.reason)
                raise
            self._last_connect_error = None
            self._connection = connection
            self._health.ok()
            return connection

    async def _open(self) -> _Connection:
        """Connect a fresh client; raises :class:`BrokerUnavailable` on failure."""
        target = self.target
        client = MqttClient(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
            # aiomqtt's own CONNACK wait outlasts ours, so a silent broker gets our clearer message
            timeout=self.connect_timeout + 1.0,
            keepalive=_KEEPALIVE,
            max_inflight_messages=self.max_inflight,
            logger=_CLIENT_LOG,
        )
        client.pending_calls_threshold = self.max_inflight + 10  # aiomqtt warns above it
        client._client.connect_timeout = self.connect_timeout  # bounds the TCP connect in paho's thread
        entering = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.wait_for(asyncio.shield(entering), self.connect_timeout)
        except TimeoutError:
            self._abandon(client, entering)
            raise BrokerUnavailable(
                "unreachable", f"broker unreachable: no answer from {target.redacted} within {self.connect_timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            self._abandon(client, entering)
            raise
        except aiomqtt.MqttCodeError as exc:  # a negative CONNACK (aiomqtt's MqttConnectError)
            _discard(client)
            code = exc.rc if isinstance(exc.rc, int | None) else exc.rc.value
            if code in _AUTH_CODES:
                raise BrokerUnavailable(
                    "not_authorised", f"broker refused the credentials (not authorised) at {target.redacted}"
                ) from None
            raise BrokerUnavailable("refused", f"broker refused the connection: {exc}") from None
        except aiomqtt.MqttError as exc:
            _discard(client)
            raise BrokerUnavailable("unreachable", f"broker unreachable: {target.redacted}: {exc}") from None
        loop = asyncio.get_running_loop()
        connection = _Connection(client, loop.create_future())
        connection.watcher = loop.create_task(self._watch(connection), name="kgw-mqtt-watch")
        return connection

    @staticmethod
    async def _watch(connection: _Connection) -> None:
        """Resolve ``lost`` when the client disconnects (we never subscribe, so no message comes)."""
        reason = "the client disconnected"
        try:
            async for _ in connection.client.messages:
                pass
        except aiomqtt.MqttError as exc:
            if exc.__cause__ is not None:
                reason = "the broker closed the connection"
                if not isinstance(exc.__cause__, aiomqtt.MqttCodeError):  # a socket error says more
                    reason += f" ({exc.__cause__})"
        finally:
            if not connection.lost.done():
                connection.lost.set_result(reason)

    async def _fail(self, connection: _Connection, key: str, reason: str) -> NoReturn:
        """Drop the connection (if still current) so the next attempt reconnects, then raise."""
        if self._closed:
            raise DeliveryError("mqtt sink is closed")
        self._health.failed(key, reason)
        if self._connection is connection:
            self._connection = None
            await self._close_connection(connection, reason)
        raise DeliveryError(reason)

    async def _close_connection(self, connection: _Connection, reason: str) -> None:
        if not connection.lost.done():
            connection.lost.set_result(reason)
        if connection.watcher is not None:
            connection.watcher.cancel()
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
            await asyncio.wait_for(connection.client.__aexit__(None, None, None), _CLOSE_TIMEOUT)

    def _abandon(self, client: MqttClient, entering: asyncio.Future[MqttClient]) -> None:
        """A connect that outlived our patience: whatever its outcome, close what it opened."""

        def finished(future: asyncio.Future[MqttClient]) -> None:
            if future.cancelled() or future.exception() is not None:
                _discard(client)
                return
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._close_connection(_Connection(client, loop.create_future()), "abandoned"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        entering.add_done_callback(finished)


def _discard(client: MqttClient) -> None:
    """Close the socket of a client whose connect failed.

    aiomqtt leaves the socket open when the CONNACK wait times out; a broker
    that answers later would then connect a client nobody owns (and take over
    our persistent session). paho's ``disconnect`` sends DISCONNECT and closes it.
    """
    with contextlib.suppress(Exception):
        client._client.disconnect()
