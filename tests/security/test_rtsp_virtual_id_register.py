"""A device may not register as the gateway's own RTSP IDs (issue 13).

The virtual device of a kindergarten's RTSP cameras (…118 8 KKKK 00) is the gateway itself:
a device registering under that ID with the shared password would take over its row and,
with its catalog, the RTSP channels (the police's entrance camera among them).
"""

from __future__ import annotations

from gateway.registry.model import Kindergarten
from gateway.rtsp.model import RtspCameraConfig, channel_id_for, virtual_device_id
from tests.conftest import GatewayFactory
from tests.security.sip_register import register_as

KG = Kindergarten("12010100112160012300", "和平区第一幼儿园", "120101")


async def test_register_as_the_rtsp_virtual_device_or_channel_is_refused(gateway_factory: GatewayFactory) -> None:
    service = await gateway_factory(password="shared-device-pw")
    await service.provisioning.add_kindergartens([KG])
    await service.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", "rtsp://127.0.0.1:9/x"), "tester")
    device_id = virtual_device_id(KG.id)
    for claimed in (device_id, channel_id_for(KG.id, 1), channel_id_for(KG.id, 2)):
        status = await register_as(service.sip_port, service.config.id, claimed, "shared-device-pw")
        assert status == 403, claimed
    assert service.sip.peer_of(device_id) is None
    row = service.directory.device(device_id)
    assert row is not None and row.online and row.manufacturer == "kgw"
    # An ordinary device of the same kindergarten still registers.
    assert await register_as(service.sip_port, service.config.id, "12010100111320012301", "shared-device-pw") == 200
