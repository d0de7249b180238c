"""Webhook signatures (gateway.alarms.signing) and MQTT URLs and topics (gateway.alarms.sinks.mqtt)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.alarms.model import Alarm, DeliveryEvent
from gateway.alarms.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from gateway.alarms.sinks.base import OutboundMessage
from gateway.alarms.sinks.mqtt import MqttTarget, parse_mqtt_url, topic_for
from gateway.errors import ConfigError

SECRET = b"shared-secret"
BODY = '{"schema":1,"alarm_id":"a1","kind_name":"一键报警"}'.encode()
T = 1_795_923_512


# --- signing --------------------------------------------------------------------------------------


def test_header_names() -> None:
    assert (SIGNATURE_HEADER, TIMESTAMP_HEADER) == ("X-KGW-Signature", "X-KGW-Timestamp")


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == f"sha256={expected}"


def test_verify_accepts_a_fresh_signature() -> None:
    assert verify(SECRET, sign(SECRET, T, BODY), str(T), BODY, now=T + 10)
    assert verify(SECRET, sign(SECRET, T, BODY).upper().replace("SHA256=", "sha256="), str(T), BODY, now=T)


@pytest.mark.parametrize(
    ("secret", "body", "timestamp"),
    [
        (b"other-secret", BODY, T),
        (SECRET, BODY + b" ", T),
        (SECRET, BODY, T + 1),  # the timestamp is part of what is signed
    ],
)
def test_verify_rejects_tampering(secret: bytes, body: bytes, timestamp: int) -> None:
    assert not verify(secret, sign(SECRET, T, BODY), str(timestamp), body, now=T)


@pytest.mark.parametrize("now", [T + 301, T - 301, float("nan"), float("inf")])
def test_verify_rejects_stale_or_future_timestamps(now: float) -> None:
    assert not verify(SECRET, sign(SECRET, T, BODY), str(T), BODY, now=now)


def test_verify_max_age_is_configurable() -> None:
    assert verify(SECRET, sign(SECRET, T, BODY), str(T), BODY, now=T + 500, max_age=600)


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [
        (None, str(T)),
        ("", str(T)),
        ("sha256=", str(T)),
        ("sha1=" + "0" * 40, str(T)),
        ("sha256=" + "z" * 64, str(T)),
        ("sha256=" + "0" * 63, str(T)),
        (hmac.new(SECRET, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest(), str(T)),  # no prefix
        ("SIG", None),
        ("SIG", ""),
        ("SIG", "-5"),
        ("SIG", "1.5e9"),
        ("SIG", "１７９５９２３５１２"),  # full-width digits are digits to str.isdigit
        ("SIG", "9" * 40),
    ],
)
def test_verify_rejects_malformed_headers(signature: str | None, timestamp: str | None) -> None:
    if signature == "SIG":
        signature = sign(SECRET, T, BODY)
    assert not verify(SECRET, signature, timestamp, BODY, now=T)


# --- MQTT URL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("mqtt://broker.local", MqttTarget("broker.local", 1883)),
        ("mqtt://10.0.0.5:1884", MqttTarget("10.0.0.5", 1884)),
        ("MQTT://h:1/", MqttTarget("h", 1)),
        ("mqtt://kgw:pw@h:1883", MqttTarget("h", 1883, "kgw", "pw")),
        ("mqtt://kgw%40tj:p%3Aw%2F%40x@h", MqttTarget("h", 1883, "kgw@tj", "p:w/@x")),
        ("mqtt://kgw@h", MqttTarget("h", 1883, "kgw", None)),
        ("mqtt://[::1]:1883", MqttTarget("::1", 1883)),
    ],
)
def test_parse_mqtt_url(url: str, target: MqttTarget) -> None:
    assert parse_mqtt_url(url) == target


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mqtts://h:8883", "scheme 'mqtts'"),
        ("http://h", "scheme 'http'"),
        ("h:1883", "scheme"),
        ("broker.local", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://h:99999", "invalid MQTT URL"),
        ("mqtt://h:abc", "invalid MQTT URL"),
        ("mqtt://h:0", "port must be"),
        ("mqtt://h/topic", "must not have a path"),
        ("mqtt://h?x=1", "must not have a path, query"),
        ("mqtt://:pw@h", "no user"),
    ],
)
def test_parse_mqtt_url_refuses(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_mqtt_url(url)


def test_password_stays_out_of_repr_and_logs() -> None:
    target = parse_mqtt_url("mqtt://kgw:top-secret@broker:1883")
    assert "top-secret" not in repr(target)
    assert target.redacted == "mqtt://kgw:***@broker:1883"
    assert parse_mqtt_url("mqtt://broker").redacted == "mqtt://broker:1883"
    assert parse_mqtt_url("mqtt://[::1]:1").redacted == "mqtt://[::1]:1"


# --- topics ---------------------------------------------------------------------------------------------


def _message(
    kindergarten_id: str | None, event: DeliveryEvent = DeliveryEvent.ALARM, district: str = "120101"
) -> OutboundMessage:
    alarm = Alarm(
        id="a1",
        seq=1,
        dedupe_key="k",
        device_id="d",
        source_id="s",
        kindergarten_id=kindergarten_id,
        district_code=district,
        priority=1,
        method=2,
        alarm_type=None,
        event_type=None,
        alarm_time=None,
        description="",
        longitude=None,
        latitude=None,
        sn=1,
        received_at=float(T),
    )
    return OutboundMessage(alarm, event, b"{}")


def test_topics() -> None:
    assert topic_for(_message("K1")) == "kgw/alarms/120101/K1"
    assert topic_for(_message("K1", DeliveryEvent.ESCALATED)) == "kgw/escalations/120101/K1"
    assert topic_for(_message(None), "tj") == "tj/alarms/120101/unplaced"


@pytest.mark.parametrize(("kg", "district"), [("a/b", "120101"), ("K1", "+"), ("#", "120101"), ("K1", "")])
def test_topic_segments_cannot_change_the_topic_shape(kg: str, district: str) -> None:
    with pytest.raises(ValueError, match="topic segment"):
        topic_for(_message(kg, district=district))
