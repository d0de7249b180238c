"""ONVIF discovery and profile lookup for consumer cameras that do not speak GB/T 28181.

Sans-I/O cores: :mod:`.wsdiscovery` (the WS-Discovery Probe and what a ProbeMatches
may claim), :mod:`.soap` (the four SOAP calls, WS-Security UsernameToken digest,
faults), :mod:`.urls` (which addresses we agree to contact). Asyncio adapters:
:mod:`.discovery` (UDP probe, multicast and unicast) and :mod:`.client` (the HTTP
calls). docs/onvif.md says why these are our own code and not a library.

This package's ``__init__`` imports nothing so that importing a core never loads
an adapter (tests/unit/test_import_contracts.py).
"""
