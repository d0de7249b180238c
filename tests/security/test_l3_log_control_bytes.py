"""L3: control bytes from a From user reached the logs (forged lines, terminal escapes)."""

from __future__ import annotations

import logging

from tests.integration.test_bad_input import sip_request
from tests.security.sip_attacker import Peer, alarm_body


async def test_control_bytes_from_network_fields_are_escaped_in_logs(gateway_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="kgw")
    service = await gateway_factory()
    peer = await Peer.bind(service)
    evil = "1201\x1b[2J\x07evil\u202e\x7f"
    try:
        register = sip_request("REGISTER", service=service, from_user=evil, port=peer.port, extra=[("Expires", "3600")])
        assert (await peer.request(register)).status == 403  # not a device ID
        alarm = sip_request(
            "MESSAGE",
            service=service,
            from_user=evil,
            port=peer.port,
            body=alarm_body("12010100111340000001"),
            extra=[("Content-Type", "Application/MANSCDP+xml")],
        )
        assert (await peer.request(alarm)).status == 404
        lines = [r.getMessage() for r in caplog.records]
        assert any("evil" in line for line in lines), lines  # the sender is logged ...
        for line in lines:
            assert not any(ch in line for ch in "\x1b\x07\u202e\x7f"), repr(line)  # ... escaped
        assert any("\\x1b" in line for line in lines)
    finally:
        peer.close()
