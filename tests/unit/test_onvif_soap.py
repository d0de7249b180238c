"""ONVIF SOAP, sans-I/O: the UsernameToken digest against the published example, envelopes, reply readers, faults."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.onvif import soap, xml
from gateway.onvif.errors import NotOnvifError, OnvifAuthError, OnvifError, OnvifFault, OnvifProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onvif"
ENV = 'xmlns:env="http://www.w3.org/2003/05/soap-envelope"'


def _reply(body: str) -> bytes:
    return f'<?xml version="1.0"?><env:Envelope {ENV} xmlns:tt="http://www.onvif.org/ver10/schema"><env:Body>{body}</env:Body></env:Envelope>'.encode()


def _fault(subcode: str, reason: str = "x") -> bytes:
    return _reply(
        f"<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>{subcode}</env:Value>"
        f'</env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason></env:Fault>'
    )


def test_password_digest_matches_the_onvif_programmers_guide_example() -> None:
    # ONVIF Application Programmer's Guide, "Authentication": nonce LKqI6G/AikKCQrN0zqZFlg==,
    # Created 2010-09-16T07:50:45Z, password userpassword -> tuOSpGlFlIXsozq4HFNeeGeFLEI=
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert soap.password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword") == "tuOSpGlFlIXsozq4HFNeeGeFLEI="


def test_security_header_carries_the_token_and_never_the_password() -> None:
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    credentials = soap.Credentials("user<&>", "userpassword")
    data = soap.envelope(soap.get_profiles(), soap.security_header(credentials, nonce, "2010-09-16T07:50:45Z"))
    assert b"userpassword" not in data
    root = xml.parse(data)
    assert root is not None
    token = next(xml.descendants(root, "UsernameToken"))
    assert xml.text_of(xml.child(token, "Username")) == "user<&>"  # escaped on the wire, read back as given
    password = xml.child(token, "Password")
    assert password is not None and password.get("Type", "").endswith("#PasswordDigest")
    assert xml.text_of(password) == "tuOSpGlFlIXsozq4HFNeeGeFLEI="
    assert xml.text_of(xml.child(token, "Nonce")) == "LKqI6G/AikKCQrN0zqZFlg=="
    assert xml.text_of(xml.child(token, "Created")) == "2010-09-16T07:50:45Z"
    assert "userpassword" not in repr(credentials)


def test_created_is_utc_to_the_second() -> None:
    assert soap.created_text(datetime(2010, 9, 16, 7, 50, 45, 900000, tzinfo=UTC).timestamp()) == "2010-09-16T07:50:45Z"


def test_get_stream_uri_asks_rtsp_unicast_and_escapes_the_token() -> None:
    root = xml.parse(soap.envelope(soap.get_stream_uri('a"<b')))
    assert root is not None
    assert xml.text_of(next(xml.descendants(root, "ProfileToken"))) == 'a"<b'
    assert xml.text_of(next(xml.descendants(root, "Stream"))) == "RTP-Unicast"
    assert xml.text_of(next(xml.descendants(root, "Protocol"))) == "RTSP"


def test_profiles_of_a_hikvision_shaped_reply() -> None:
    body = soap.read_reply(200, (FIXTURES / "hikvision_style_getprofiles.xml").read_bytes())
    main, sub = soap.parse_profiles(body)  # the audio-only profile has no video encoder
    assert main == soap.MediaProfile("Profile_1", "mainStream", "H264", 2560, 1440, 25)
    assert sub == soap.MediaProfile("Profile_2", "subStream", "H264", 640, 360, 15)


def test_profiles_are_bounded() -> None:
    one = (
        '<trt:Profiles xmlns:trt="http://www.onvif.org/ver10/media/wsdl" token="T{i}"><tt:Name>n</tt:Name>'
        "<tt:VideoEncoderConfiguration><tt:Encoding>h264</tt:Encoding><tt:Resolution><tt:Width>-5</tt:Width>"
        "<tt:Height>99999999</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>"
    )
    many = "".join(one.format(i=i % 40) for i in range(100))
    body = soap.read_reply(
        200,
        _reply(
            f'<trt:GetProfilesResponse xmlns:trt="http://www.onvif.org/ver10/media/wsdl">{many}</trt:GetProfilesResponse>'
        ),
    )
    profiles = soap.parse_profiles(body)
    assert len(profiles) == soap.MAX_PROFILES
    assert len({p.token for p in profiles}) == soap.MAX_PROFILES
    assert (profiles[0].encoding, profiles[0].width, profiles[0].height) == ("H264", 0, 0)


def test_device_information_stream_uri_media_xaddr_and_time() -> None:
    info = soap.parse_device_information(
        soap.read_reply(
            200,
            _reply(
                "<GetDeviceInformationResponse><Manufacturer>HIKVISION</Manufacturer><Model>DS-2CD2143G0-I</Model>"
                "<FirmwareVersion>V5.5.82 build 190909</FirmwareVersion><SerialNumber>DS-2CD2143G0-I20190101AAWRC12345678</SerialNumber>"
                "</GetDeviceInformationResponse>"
            ),
        )
    )
    assert info == soap.DeviceInformation(
        "HIKVISION", "DS-2CD2143G0-I", "V5.5.82 build 190909", "DS-2CD2143G0-I20190101AAWRC12345678"
    )
    uri = soap.parse_stream_uri(
        soap.read_reply(
            200,
            _reply(
                "<GetStreamUriResponse><MediaUri><tt:Uri>rtsp://192.168.1.64:554/Streaming/Channels/101?transportmode=unicast&amp;profile=Profile_1</tt:Uri></MediaUri></GetStreamUriResponse>"
            ),
        )
    )
    assert uri == "rtsp://192.168.1.64:554/Streaming/Channels/101?transportmode=unicast&profile=Profile_1"
    media = soap.parse_media_xaddr(
        soap.read_reply(
            200,
            _reply(
                "<GetCapabilitiesResponse><Capabilities><Media><XAddr>http://192.168.1.64/onvif/Media</XAddr></Media></Capabilities></GetCapabilitiesResponse>"
            ),
        )
    )
    assert media == "http://192.168.1.64/onvif/Media"
    clock = soap.parse_system_time(
        soap.read_reply(
            200,
            _reply(
                "<GetSystemDateAndTimeResponse><SystemDateAndTime><UTCDateTime><Time><Hour>7</Hour><Minute>50</Minute>"
                "<Second>45</Second></Time><Date><Year>2010</Year><Month>9</Month><Day>16</Day></Date></UTCDateTime>"
                "</SystemDateAndTime></GetSystemDateAndTimeResponse>"
            ),
        )
    )
    assert clock == datetime(2010, 9, 16, 7, 50, 45, tzinfo=UTC).timestamp()
    broken = _reply(
        "<GetSystemDateAndTimeResponse><SystemDateAndTime><UTCDateTime><Time><Hour>25</Hour></Time><Date><Year>2010</Year></Date></UTCDateTime></SystemDateAndTime></GetSystemDateAndTimeResponse>"
    )
    assert soap.parse_system_time(soap.read_reply(200, broken)) is None


@pytest.mark.parametrize("subcode", ["ter:NotAuthorized", "wsse:FailedAuthentication", "ns1:InvalidSecurity"])
def test_authentication_faults(subcode: str) -> None:
    with pytest.raises(OnvifAuthError):
        soap.read_reply(400, _fault(subcode))


def test_soap11_authentication_fault() -> None:
    data = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>wsse:FailedAuthentication</faultcode><faultstring>no</faultstring></s:Fault></s:Body></s:Envelope>'
    with pytest.raises(OnvifAuthError):
        soap.read_reply(500, data)


def test_other_faults_carry_their_code() -> None:
    with pytest.raises(OnvifFault) as caught:
        soap.read_reply(500, _fault("ter:ActionNotSupported", "no such action"))
    assert caught.value.code == "ter:ActionNotSupported"
    assert "ter:ActionNotSupported" in caught.value.message_zh


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b"", OnvifAuthError),
        (403, b"<html>Forbidden</html>", OnvifAuthError),
        (200, b"<html><body>Welcome to nginx!</body></html>", NotOnvifError),
        (404, b"Not Found", NotOnvifError),
        (200, b"", NotOnvifError),
        (500, _reply("<Nothing/>"), NotOnvifError),
        (200, _reply("<Other/>") + b" " * soap.MAX_REPLY, OnvifProtocolError),
    ],
)
def test_what_is_not_an_onvif_answer(status: int, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        soap.read_reply(status, body)


def test_a_reply_without_the_expected_response_is_a_protocol_error() -> None:
    body = soap.read_reply(200, _reply("<Other/>"))
    for reader in (soap.parse_profiles, soap.parse_device_information, soap.parse_stream_uri, soap.parse_media_xaddr):
        with pytest.raises(OnvifProtocolError):
            reader(body)
    with pytest.raises(OnvifProtocolError):
        soap.parse_stream_uri(soap.read_reply(200, _reply("<GetStreamUriResponse><MediaUri/></GetStreamUriResponse>")))


def test_entity_expansion_is_not_onvif() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaa">]>' + _reply("<x>&a;</x>").split(b"?>", 1)[1]
    with pytest.raises(NotOnvifError):
        soap.read_reply(200, bomb)


PROFILES = (FIXTURES / "hikvision_style_getprofiles.xml").read_bytes()


@given(st.integers(100, 599), st.integers(0, len(PROFILES) - 1), st.binary(min_size=1, max_size=8))
def test_mutated_replies_read_or_raise_our_error(status: int, at: int, junk: bytes) -> None:
    data = PROFILES[:at] + junk + PROFILES[at + len(junk) :]
    with contextlib.suppress(OnvifError):
        soap.parse_profiles(soap.read_reply(status, data))
