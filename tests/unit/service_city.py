"""A small city for the cascade's unit tests: a directory with public, indoor and alarm channels, and three uppers."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.cascade.policy import SharePolicy
from gateway.cascade.upper_config import UpperPlatformConfig, UpperSpec
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, sip_uri
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest
from gateway.registry.directory import Directory
from gateway.registry.model import AreaConfirmation, AreaTag, Channel, Device, Kindergarten
from tests.unit.service_fakes import Upper
from tests.unit.sip_memnet import DOMAIN, GW_HOST, GW_ID, GW_PORT, MemNet

HEPING, HEXI = "120101", "120103"


def channel_id(type_code: int, kg: int, nn: int, district: str = HEPING) -> str:
    """A channel (or device) ID of kindergarten ``kg``: district, industry 11, type, serial."""
    return f"{district}0011{type_code:03d}0{kg:04d}{nn:02d}"


def kindergarten_id(kg: int, district: str = HEPING) -> str:
    """Kindergarten ``kg``'s virtual organisation (216)."""
    return f"{district}00112160{kg:04d}00"


NVR_1 = channel_id(118, 1, 0)  # online, in Heping
NVR_2 = channel_id(118, 2, 0, HEXI)  # offline, in Hexi
ENTRANCE = channel_id(131, 1, 1)
PERIMETER = channel_id(131, 1, 2)
CLASSROOM = channel_id(131, 1, 3)
NAP_ROOM = channel_id(131, 1, 4)
BACK_GATE = channel_id(131, 1, 5)  # the NVR reported it off
ALARM_BUTTON = channel_id(134, 1, 6)
HEXI_GATE = channel_id(131, 2, 1, HEXI)  # reported on, but its NVR is offline
KG1_CHANNELS = (ENTRANCE, PERIMETER, CLASSROOM, NAP_ROOM, BACK_GATE, ALARM_BUTTON)
ALL_CHANNELS = (*KG1_CHANNELS, HEXI_GATE)


def city_channel(
    cid: str, name: str, area: AreaTag, *, online: bool = True, device: str = NVR_1, district: str = HEPING
) -> Channel:
    """A channel row as a catalog would leave it in the directory."""
    return Channel(
        id=cid,
        device_id=device,
        kindergarten_id=kindergarten_id(int(cid[14:18]), district),
        district_code=district,
        name=name,
        area=area,
        type_code=int(cid[10:13]),
        online=online,
    )


def city_directory() -> Directory:
    """Two kindergartens: Heping's (NVR online) with public, indoor and alarm channels; Hexi's (NVR offline)."""
    directory = Directory()
    directory.add_kindergartens(
        [
            Kindergarten(kindergarten_id(1), "和平区第1幼儿园", HEPING),
            Kindergarten(kindergarten_id(2, HEXI), "河西区第2幼儿园", HEXI),
        ]
    )
    # The installer confirmed every camera's area (only confirmed areas are shared with police).
    directory.confirmations.update(
        (cid, AreaConfirmation(cid, area, "installer", 0.0))
        for cid, area in (
            (ENTRANCE, AreaTag.ENTRANCE),
            (PERIMETER, AreaTag.PERIMETER),
            (CLASSROOM, AreaTag.CLASSROOM),
            (NAP_ROOM, AreaTag.DORMITORY),
            (BACK_GATE, AreaTag.ENTRANCE),
            (HEXI_GATE, AreaTag.ENTRANCE),
        )
    )
    directory.put_device(Device(NVR_1, kindergarten_id(1), HEPING, online=True))
    directory.put_device(Device(NVR_2, kindergarten_id(2, HEXI), HEXI, online=False))
    directory.upsert_channels(
        NVR_1,
        [
            city_channel(ENTRANCE, "大门", AreaTag.ENTRANCE),
            city_channel(PERIMETER, "东侧围墙周界", AreaTag.PERIMETER),
            city_channel(CLASSROOM, "小一班教室", AreaTag.CLASSROOM),
            city_channel(NAP_ROOM, "午睡室", AreaTag.DORMITORY),
            city_channel(BACK_GATE, "后门", AreaTag.ENTRANCE, online=False),
            city_channel(ALARM_BUTTON, "一键报警", AreaTag.OTHER),
        ],
    )
    directory.upsert_channels(NVR_2, [city_channel(HEXI_GATE, "正门", AreaTag.ENTRANCE, device=NVR_2, district=HEXI)])
    return directory


# --- uppers ------------------------------------------------------------------------------------------------

MUNICIPAL_ID = "12000000002000000001"
POLICE_ID = "12000000002000000002"
HEPING_ID = "12010100002000000001"
UPPERS: dict[str, tuple[str, str, SharePolicy]] = {  # name -> (server ID, host, policy); every upper on port 5060
    "municipal": (MUNICIPAL_ID, "10.0.0.9", SharePolicy.municipal()),
    "police": (POLICE_ID, "10.0.0.10", SharePolicy.police()),
    "heping": (HEPING_ID, "10.0.0.11", SharePolicy.district(HEPING)),
}


def upper_spec(name: str) -> UpperSpec:
    """The configuration of one of :data:`UPPERS`."""
    server_id, host, policy = UPPERS[name]
    # The fake uppers signal from 10.0.0.x but receive their media on loopback (the test's sockets).
    config = UpperPlatformConfig(
        name=name, server_id=server_id, host=host, password="upper-pw", media_networks=("127.0.0.1/32",)
    )
    return UpperSpec(config, policy)


def add_upper(net: MemNet, name: str, *, register_status: int = 200) -> Upper:
    """One of :data:`UPPERS` on the network."""
    server_id, host, _ = UPPERS[name]
    endpoint = SipEndpoint(SeededIds(f"up-{name}"), local_host=host, local_port=5060)
    upper = Upper(endpoint, server_id, register_status=register_status)
    net.add(name, endpoint, [upper])
    return upper


def upper_request(
    upper: Upper, method: str, body: bytes, *, call_id: str, extra: Sequence[tuple[str, str]] = ()
) -> SipRequest:
    """A request from ``upper`` to the gateway (MESSAGE, SUBSCRIBE) with a MANSCDP body."""
    host = upper.endpoint.local_host
    headers = Headers(
        [
            ("From", f"<sip:{upper.server_id}@{upper.server_id[:10]}>;tag={upper.endpoint.new_tag()}"),
            ("To", f"<sip:{GW_ID}@{DOMAIN}>"),
            ("Call-ID", call_id),
            ("CSeq", f"1 {method}"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:{upper.server_id}@{host}:5060>"),
            ("Content-Type", MANSCDP_CONTENT_TYPE),
            *extra,
        ]
    )
    return SipRequest(headers=headers, body=body, method=method, uri=sip_uri(GW_ID, GW_HOST, GW_PORT))
