"""Pytest fixtures for a real Mosquitto broker (registered by tests/conftest.py).

Use the ``mosquitto`` fixture (an anonymous broker) or ``mosquitto_factory``
(``users={"name": "pw"}`` for authentication); every broker is stopped at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from simulators.mosquitto import BrokerError, MosquittoBroker

__all__ = ["BrokerError", "MosquittoBroker", "mosquitto", "mosquitto_factory"]

BrokerFactory = Callable[..., Awaitable[MosquittoBroker]]


@pytest.fixture
async def mosquitto() -> AsyncIterator[MosquittoBroker]:
    """A started anonymous broker, always stopped at the end."""
    broker = MosquittoBroker()
    try:
        await broker.start()
        yield broker
    finally:
        await broker.stop()
        broker.cleanup()


@pytest.fixture
async def mosquitto_factory() -> AsyncIterator[BrokerFactory]:
    """Start brokers (``users={"name": "pw"}`` for authentication); all stopped at the end."""
    started: list[MosquittoBroker] = []

    async def make(users: dict[str, str] | None = None) -> MosquittoBroker:
        broker = MosquittoBroker(users)
        started.append(broker)
        await broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in started:
            await broker.stop()
            broker.cleanup()
