"""aiomqtt's client with one race closed: write interest for a connection that has closed meanwhile.

paho asks for write interest from its network code, sometimes on an executor thread.
aiomqtt 2.5.1 reads the socket's file number at that moment and schedules
``loop.add_writer`` for later. If the connection closes in between (the broker goes
away, or we shut down), the scheduled call registers a closed descriptor: uvloop
raises "Bad file descriptor" and the loop logs a traceback. Seen at the demo's
shutdown under load. Here the socket is looked at when the registration runs, and a
closed one is left alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

__all__ = ["MqttClient"]


class MqttClient(aiomqtt.Client):
    """``aiomqtt.Client`` that registers write interest only for a socket that is still open."""

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken connection: disconnect, as aiomqtt does
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            fileno = sock.fileno()
            if fileno < 0:
                return  # closed before we got here
            with contextlib.suppress(OSError, ValueError):  # closed between the look and the call
                self._loop.add_writer(fileno, write)

        self._loop.call_soon_threadsafe(register)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fileno = sock.fileno()
        if fileno >= 0:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_writer(fileno)
