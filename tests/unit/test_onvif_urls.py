"""Which addresses ONVIF lookups contact: every URL from a camera is a claim."""

from __future__ import annotations

import pytest

from gateway.onvif.errors import OnvifAddressError
from gateway.onvif.urls import HttpAddress, parse_xaddr, rebase, stream_uri


def test_xaddr_is_normalised() -> None:
    assert parse_xaddr("HTTP://192.168.1.64/onvif/device_service") == HttpAddress(
        "http", "192.168.1.64", 80, "/onvif/device_service"
    )
    assert parse_xaddr("https://[fe80::1]:8443/onvif").url == "https://[fe80::1]:8443/onvif"
    assert parse_xaddr("http://cam.local:8899").path == "/"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "rtsp://1.2.3.4/x",
        "http://u:p@1.2.3.4/x",
        "http://1.2.3.4 /x",
        "http://1.2.3.4/\r\nHost: evil",
        "http://[::1/x",
        "//1.2.3.4/x",
        "http://1.2.3.4:0/",
    ],
)
def test_bad_xaddrs_are_refused(text: str) -> None:
    with pytest.raises(OnvifAddressError):
        parse_xaddr(text)


def test_a_media_xaddr_on_another_host_is_moved_onto_the_operators() -> None:
    operator = parse_xaddr("http://203.0.113.7:8080/onvif/device_service")
    assert rebase("http://192.168.1.64/onvif/Media", operator).url == "http://203.0.113.7:8080/onvif/Media"
    assert (
        rebase("http://203.0.113.7:8000/onvif/Media", operator).url == "http://203.0.113.7:8000/onvif/Media"
    )  # same host
    with pytest.raises(OnvifAddressError):
        rebase("file:///etc/passwd", operator)


def test_stream_uri_policy() -> None:
    same = stream_uri("rtsp://192.168.1.64:554/Streaming/Channels/101", "192.168.1.64")
    assert (same.uri, same.rewritten) == ("rtsp://192.168.1.64:554/Streaming/Channels/101", False)
    moved = stream_uri("rtsp://10.9.9.9:8554/live?a=1", "192.168.1.64")
    assert (moved.uri, moved.claimed, moved.rewritten) == (
        "rtsp://192.168.1.64:8554/live?a=1",
        "rtsp://10.9.9.9:8554/live?a=1",
        True,
    )
    secret = stream_uri("rtsp://admin:hunter2@192.168.1.64/h264", "192.168.1.64")
    assert "hunter2" not in secret.uri + secret.claimed and secret.rewritten
    for bad in ("http://192.168.1.64/x", "rtsp:///nohost", "rtsp://1.2.3.4/" + "x" * 600):
        with pytest.raises(OnvifAddressError):
            stream_uri(bad, "192.168.1.64")
