"""Alarms: intake of GB/T 28181 Alarm notifications, a durable outbox, sinks, lifecycle.

Sans-I/O pieces (:mod:`.intake`, :mod:`.outbox`, :mod:`.lifecycle`, :mod:`.drills`,
:mod:`.payload`) decide; :mod:`.service` runs them on asyncio with the
store (:mod:`.store`) and the sinks (:mod:`.sinks`).
"""
