"""A device's Alarm notification on its way in: stored durably first, then answered.

Device access holds the alarm's MESSAGE transaction open (the device's
retransmissions are absorbed) and hands the alarm over as an
:class:`~gateway.gb28181.access.AlarmNotified` event. This receiver places it
(by its source channel, else its sender), gives it to the
:class:`~gateway.alarms.service.AlarmService`, and only once it is committed
answers the device: 200 and the standard's Response MESSAGE. If it cannot be
stored the device hears 500 and sends it again. An alarm that is not from the
registered session at its registered address (``untrusted_reason``, or a lapsed
registration) is stored unverified and held from the sinks; the device's next
authenticated REGISTER from that address (:meth:`AlarmReceiver.registered`)
verifies it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from gateway.alarms.intake import AlarmNotice
from gateway.errors import StoreError
from gateway.gb28181.access_events import AlarmNotified, DeviceRegistered
from gateway.registry.directory import Directory

__all__ = ["AlarmReceiver"]

log = logging.getLogger("kgw.alarms")


class AlarmStoring(Protocol):
    """What the receiver needs of the alarm service."""

    async def receive(self, notice: AlarmNotice) -> object: ...

    def device_registered(self, device_id: str, peer: str) -> None: ...


class AlarmAnswering(Protocol):
    """What the receiver needs of device access: answering the held MESSAGE."""

    def confirm_alarm(self, event: AlarmNotified, now: float, *, stored: bool = True) -> bool: ...


class AlarmReceiver:
    """Turns ``AlarmNotified`` events into stored alarms and device answers."""

    def __init__(
        self,
        alarms: AlarmStoring,
        directory: Directory,
        access: AlarmAnswering,
        wall: Callable[[float], float],
    ) -> None:
        self.alarms = alarms
        self.directory = directory
        self.access = access
        self.wall = wall
        self._tasks: set[asyncio.Task[None]] = set()

    def receive(self, event: AlarmNotified) -> None:
        """Store the alarm in the background; the device is answered when it is committed."""
        task = asyncio.get_running_loop().create_task(self._store_then_answer(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def registered(self, event: DeviceRegistered) -> None:
        """An authenticated REGISTER: the device's alarms held from that very address are verified."""
        self.alarms.device_registered(event.device_id, str(event.peer))

    async def stop(self, timeout: float = 5.0) -> None:
        """Let the alarms being stored finish (their devices are answered after)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _store_then_answer(self, event: AlarmNotified) -> None:
        sender = self.directory.device(event.device_id)
        # The source channel places the alarm best: behind a lower platform the sender
        # is the platform, which belongs to no kindergarten.
        source = self.directory.channels.get(event.alarm.device_id)
        notice = AlarmNotice(
            device_id=event.device_id,
            body=event.alarm,
            received_at=self.wall(event.at),
            sender_registered=event.registered,
            kindergarten_id=(source.kindergarten_id if source else None)
            or (sender.kindergarten_id if sender else None),
            district_code=(source.district_code if source else "") or (sender.district_code if sender else ""),
            peer=str(event.peer),
            untrusted_reason=event.untrusted_reason,
            sender_kindergarten_id=sender.kindergarten_id if sender else None,
        )
        stored = True
        try:
            await self.alarms.receive(notice)
        except StoreError:
            stored = False
            log.error(
                "alarm from %s (SN %d) could not be stored: answered 500 so the device sends it again",
                event.device_id,
                event.alarm.sn,
            )
        except Exception:  # a bug must still leave the device an answer it retries on
            stored = False
            log.exception("alarm from %s (SN %d) failed: answered 500", event.device_id, event.alarm.sn)
        self.access.confirm_alarm(event, asyncio.get_running_loop().time(), stored=stored)
