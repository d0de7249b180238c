"""L1: a REGISTER with an unclosed ``<`` in Contact and no Expires got no answer and a traceback."""

from __future__ import annotations

import logging

from tests.integration.test_bad_input import sip_request
from tests.security.sip_attacker import DEVICE_ID, Peer


async def test_unclosed_contact_without_expires_gets_400_and_no_traceback(gateway_factory, caplog):
    caplog.set_level(logging.INFO)
    service = await gateway_factory()
    peer = await Peer.bind(service)
    try:
        for method, extra in (
            ("REGISTER", [("Contact", f"<sip:{DEVICE_ID}@127.0.0.1:{peer.port}")]),
            ("REGISTER", [("Contact", f"<sip:{DEVICE_ID}@127.0.0.1:{peer.port};expires=60")]),
            ("REGISTER", [("Contact", "<")]),
            ("INVITE", [("Contact", "<sip:x@127.0.0.1"), ("Content-Type", "application/sdp")]),
        ):
            data = sip_request(method, service=service, from_user=DEVICE_ID, port=peer.port, extra=extra)
            answer = await peer.request(data, timeout=20)
            assert answer.status == 400, (method, extra, answer.status)
        assert (await peer.options(service)).status == 200
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    finally:
        peer.close()
