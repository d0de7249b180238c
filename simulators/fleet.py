"""A fleet of simulated GB/T 28181 devices: one kindergarten = one socket.

Each kindergarten of the simulated city sits behind its own address, as it
would behind its NAT: its devices (NVR, alarm box, perimeter alarm, or one
IPC per camera) share one UDP socket or one TCP connection to the gateway,
exactly like devices behind a kindergarten's router share its public
address. Cameras answer live INVITEs and stream a drawn, encoded test card
(:mod:`simulators.streamer`, one :class:`StreamHub` per kindergarten, one
shared :class:`ClipCache`). The SIP logic is the gateway's own device-role core
(:class:`~gateway.gb28181.device_agent.DeviceAgent`); this module only builds
profiles from the city plan and runs them.

Alarms: :meth:`Fleet.press` raises one alarm in a kindergarten (one-key button,
perimeter trip or a camera fault), :meth:`Fleet.press_all` presses every
kindergarten's button at once (the alarm-storm benchmark), ``alarm_rate`` keeps a
steady trickle of alarms going, and ``control_port`` opens the HTTP control
endpoint of :mod:`simulators.control` so that tests and operators can press
buttons from outside.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import random
import resource
import ssl
import time
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.gb28181.device_agent import (
    ALARM_KINDS,
    AgentHost,
    AgentState,
    AgentTiming,
    AlarmRecord,
    DeviceAgent,
    DeviceProfile,
    Misbehaviour,
    ServerInfo,
)
from gateway.gb28181.device_broadcast import DeviceBroadcast
from gateway.gb28181.device_recordings import IndexOptions, RecordingIndex
from gateway.gb28181.lower import Redirected
from gateway.gb28181.manscdp import CatalogItem
from gateway.gb28181.sdp import MediaTransport
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.router import SipRouter
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.housekeeping import GC_THRESHOLDS
from gateway.io.sip_io import SipDriver
from simulators.audio_sink import AudioSinks
from simulators.black_picture import BlackClips
from simulators.city import SimDevice, SimKindergarten, build_city, city_summary, installer_areas
from simulators.control import bound_port, start_control
from simulators.faults import FaultSpec, KindergartenFaults, apply_plan_faults, describe, resolve_faults
from simulators.playback import PlaybackHub, attach_recordings, site_seed
from simulators.playback_video import SecondCache
from simulators.ptz_view import equip_ptz, ptz_type_for
from simulators.streamer import StreamHub, StreamStats
from simulators.substreams import SubStreams
from simulators.upper_down import UpperDown
from simulators.video import ClipCache, VideoProfile

log = logging.getLogger("kgw.simulate")

CAMERA_ALARM_KINDS = frozenset({"video_loss", "tamper", "disk_fault"})
"""Alarm kinds a camera device raises (the NVR, or the first IPC in ``ipc_mode``)."""
PERIMETER_SHARE = 0.2  # of the steady alarm rate, when the kindergarten has a perimeter alarm
UNREGISTER_WAIT = 3.0  # s a stopping fleet waits for the answers to its REGISTER Expires: 0


class FleetLookupError(LookupError):
    """No such kindergarten, or the kindergarten has no device for that alarm kind."""


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """Everything ``kgw simulate`` can set."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 5060
    gateway_id: str = "12010000002090000001"
    password: str = "12345678"
    kindergartens: int = 10
    transport: Transport = Transport.UDP
    seed: int = 2020
    ipc_mode: bool = False
    cameras: tuple[int, int] = (8, 16)
    shard: tuple[int, int] = (0, 1)  # (i, n): only every n-th kindergarten from the i-th (n processes share a city)
    only_districts: tuple[str, ...] = ()  # only these districts' kindergartens (); () = all
    expires: int = 3600
    keepalive_interval: float = 60.0
    rate: float = 2000.0  # devices started per second
    wrong_password: int = 0  # how many devices use a wrong password
    silent: int = 0  # how many devices never keep alive
    flap: int = 0  # how many devices alternate silent/talking
    flap_period: float = 180.0
    malformed: int = 0  # how many devices send a broken keepalive every 3rd time
    local_host: str = "127.0.0.1"
    api: str | None = None  # gateway HTTP API to provision kindergartens into
    also_provision: tuple[str, ...] = ()  # the other gateway processes' APIs (kgw demo --gateways N)
    confirm_areas: bool = True  # provisioning confirms the cameras' areas from the plan (as an installer would)
    api_token: str | None = None  # its API token (Authorization: Bearer); default: env KGW_API_TOKEN
    api_cafile: str | None = None  # an https API's own certificate (the demo's, on loopback)
    video: VideoProfile = VideoProfile()  # what the cameras stream (default 640x360@25 H.264)
    hevc_share: float = 0.0  # of the cameras stream H.265 instead (simulators/hevc.py; the demo: 1 in 8)
    sub_streams: float = 0.75  # share of cameras with a 320x180 sub-stream (simulators/substreams.py)
    alarm_rate: float = 0.0  # alarms per second across the fleet (steady; 0 = none)
    control_port: int | None = None  # HTTP control endpoint on 127.0.0.1 (0 = any free port; None = off)
    audio_tcp: bool = False  # devices offer broadcast audio over TCP (they listen), else UDP
    audio_ps: bool = False  # devices offer broadcast audio only as PS/90000 (Hikvision/Dahua), else PCMA
    # Where a REGISTER 302 may send the devices (the city's gateways): "host" or "host:port";
    # () = the gateway's host, any port. A 302 elsewhere is refused (GB/T 28181-2022 redirect).
    redirect_allow: tuple[str, ...] = ()
    faults: tuple[FaultSpec, ...] = ()  # kindergartens that fail on purpose (simulators/faults.py)

    @property
    def domain(self) -> str:
        """The gateway's SIP domain."""
        return self.gateway_id[:10]


@dataclass
class KindergartenNode:
    """One simulated kindergarten's devices and socket."""

    plan: SimKindergarten
    host: AgentHost
    driver: SipDriver | None = None
    media: StreamHub | None = None
    playback: PlaybackHub | None = None  # recordings of its cameras (simulators.playback)
    recordings: RecordingIndex | None = None
    faults: KindergartenFaults | None = None  # what fails here on purpose (simulators/faults.py)

    def drain(self) -> None:
        """The driver's activity hook: live calls, then playback calls."""
        for hub in (self.media, self.playback):
            if hub is not None:
                hub.drain()

    broadcast: DeviceBroadcast | None = None


@dataclass
class Fleet:
    """Runs the simulated city against a gateway."""

    options: FleetOptions
    city: list[SimKindergarten] = field(default_factory=list)
    nodes: list[KindergartenNode] = field(default_factory=list)
    agents: dict[str, DeviceAgent] = field(default_factory=dict)
    clips: ClipCache = field(default_factory=ClipCache)
    seconds: SecondCache = field(default_factory=SecondCache)  # playback GOPs
    black: BlackClips = field(default_factory=BlackClips)  # black-picture cameras' clips
    faults: dict[str, KindergartenFaults] = field(default_factory=dict)
    """The faulty kindergartens by ID (``FleetOptions.faults`` resolved against the city)."""
    uppers: dict[str, UpperDown] = field(default_factory=dict)
    """Upper platforms' upper-down switches the control endpoint serves (the demo's platforms)."""
    control: web.AppRunner | None = field(default=None, init=False)
    control_port: int | None = field(default=None, init=False)
    """The bound port of the control endpoint once started."""
    audio: AudioSinks | None = field(default=None, init=False)
    """The devices' speakers: what broadcasts they heard."""
    _by_id: dict[str, KindergartenNode] = field(default_factory=dict, init=False)
    _rng: random.Random = field(default_factory=random.Random, init=False)
    _alarm_task: asyncio.Task[None] | None = field(default=None, init=False)
    _tcp_waiting: dict[tuple[int, tuple[str, int]], list[DeviceAgent]] = field(default_factory=dict, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def start(self) -> None:
        """Build the city, provision it (if an API is given), open sockets, start registering."""
        opts = self.options
        raise_fd_limit()
        self._rng = random.Random(opts.seed)
        self.city = fleet_city(opts)
        partial = opts.shard != (0, 1) or bool(opts.only_districts)
        self.faults = resolve_faults(self.city, opts.faults, partial=partial)
        self.city = [apply_plan_faults(k, self.faults.get(k.id)) for k in self.city]
        for faulty in self.faults.values():
            log.info("kindergarten %s fails on purpose: %s", faulty.kindergarten_id, ", ".join(map(str, faulty.specs)))
        summary = city_summary(self.city)
        log.info(
            "simulated city: %d kindergartens, %d devices, %d channels",
            summary["kindergartens"],
            summary["devices"],
            summary["channels"],
        )
        for api in (opts.api, *opts.also_provision) if opts.api else ():
            await asyncio.to_thread(
                provision,
                api,
                self.city,
                confirm_areas=opts.confirm_areas,
                token=opts.api_token,
                cafile=opts.api_cafile,
            )
        misbehaviours = self._misbehaviour_plan(sum(len(k.devices) for k in self.city))
        self.audio = AudioSinks(opts.local_host, ps=opts.audio_ps)
        await self.audio.start()
        audio_mode = MediaTransport.TCP_PASSIVE if opts.audio_tcp else MediaTransport.UDP
        index = 0
        for plan in self.city:
            endpoint = SipEndpoint(RandomIds(), local_host=opts.local_host, local_port=0, user_agent="kgw-sim")
            faults = self.faults.get(plan.id)
            node = KindergartenNode(plan=plan, host=AgentHost(endpoint), faults=faults)
            node.media = StreamHub(
                node.host,
                plan.name,
                self.clips,
                opts.video,
                local_host=opts.local_host,
                substreams=SubStreams(opts.sub_streams),
                hevc_share=opts.hevc_share,
                offline=faults.offline if faults is not None else frozenset(),
                black=(faults.black, self.black) if faults is not None and faults.black else None,
            )
            # One router per socket; a request for an ID no device here owns gets 404, as behind a real NAT.
            node.broadcast = DeviceBroadcast(endpoint, self.audio, transport=audio_mode, ps=opts.audio_ps)
            router = SipRouter(endpoint, [node.broadcast, node.host], unclaimed_status=404)
            node.playback = PlaybackHub(node.host, plan.name, self.seconds, opts.video, local_host=opts.local_host)
            node.driver = SipDriver(router, on_activity=node.drain)
            if opts.transport is Transport.UDP:
                await node.driver.listen(opts.local_host, 0, tcp=False)
                server_peer = Peer(Transport.UDP, opts.gateway_host, opts.gateway_port)
            else:
                server_peer = await node.driver.connect_tcp(opts.gateway_host, opts.gateway_port)
                endpoint.local_host = opts.local_host
            server = ServerInfo(
                server_id=opts.gateway_id,
                domain=opts.domain,
                peer=server_peer,
                redirect_allow=frozenset(opts.redirect_allow or (opts.gateway_host,)),
            )
            for device in plan.devices:
                misbehaviour = misbehaviours.get(index, Misbehaviour())
                if faults is not None and faults.silent_alarm and device.kind == "alarm_box":
                    misbehaviour = replace(misbehaviour, alarm_silent=True)
                offline = faults.offline if faults is not None else frozenset()
                agent = DeviceAgent(
                    device_profile(device, plan, opts.password, offline=offline),
                    server,
                    endpoint,
                    timing=AgentTiming(expires=opts.expires, keepalive_interval=opts.keepalive_interval),
                    misbehaviour=misbehaviour,
                )
                index += 1
                if opts.transport is Transport.TCP:
                    agent.on_redirect = functools.partial(self._connect_redirected, node)
                equip_ptz(agent)  # DeviceControl: PTZ for its ball cameras, Result for the rest
                agent.features.append(node.broadcast)
                node.host.add(agent)
                self.agents[device.id] = agent
            wall_offset = time.time() - node.driver.loop.time()
            seed = IndexOptions(seed=site_seed(opts.seed, plan.id))
            node.recordings = attach_recordings(node.playback, seed, wall_offset=wall_offset)
            self.nodes.append(node)
            self._by_id[plan.id] = node
        if opts.control_port is not None:
            self.control = await start_control(self, "127.0.0.1", opts.control_port)
            self.control_port = bound_port(self.control)
            log.info("simulator control endpoint on http://127.0.0.1:%d/", self.control_port)
        # Tens of thousands of agents are long-lived: keep them out of the cyclic GC's scans
        # (a full collection rescanning them every few seconds is CPU the gateway could use).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        await self._ramp()
        if opts.alarm_rate > 0 and self.nodes:
            self._alarm_task = asyncio.create_task(self._alarm_loop(opts.alarm_rate), name="kgw-sim-alarms")

    def _connect_redirected(self, node: KindergartenNode, agent: DeviceAgent, event: Redirected) -> None:
        """Over TCP a redirected device needs a connection to its new gateway: one per kindergarten and address."""
        driver = node.driver
        if driver is None:
            return
        key = (event.host, event.port)
        waiting = self._tcp_waiting.setdefault((id(node), key), [])
        waiting.append(agent)
        if len(waiting) > 1:
            return  # the connection is being opened; this agent registers when it is

        async def connect() -> None:
            try:
                if not driver.has_connection(*key):
                    await driver.open_tcp(*key)
            except OSError as exc:
                log.info("cannot connect to redirected gateway %s:%d: %s", *key, exc)
            loop = asyncio.get_running_loop()
            for waiter in self._tcp_waiting.pop((id(node), key), []):
                if waiter.client.peer.host == key[0] and waiter.client.peer.port == key[1]:
                    waiter.client.retry_now(loop.time())  # its first REGISTER found no connection
            if node.driver is not None:
                node.driver.flush()

        task = asyncio.get_running_loop().create_task(connect(), name="kgw-sim-redirect")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ramp(self) -> None:
        """Start devices at ``rate`` per second so the first burst does not overflow buffers."""
        loop = asyncio.get_running_loop()
        batch = max(1, int(self.options.rate / 20))
        started = 0
        for node in self.nodes:
            alive = [a for a in node.host.agents.values() if not _powered_off(a, node.faults)]
            node.host.start_all(loop.time(), alive)
            started += len(alive)
            if started >= batch:
                started = 0
                await asyncio.sleep(batch / self.options.rate)

    def _misbehaviour_plan(self, total: int) -> dict[int, Misbehaviour]:
        """Spread the misbehaving devices evenly over the city (deterministic)."""
        opts = self.options
        kinds = [
            (opts.wrong_password, lambda: Misbehaviour(wrong_password=True)),
            (opts.silent, lambda: Misbehaviour(silent=True)),
            (opts.flap, lambda: Misbehaviour(flap_period=opts.flap_period)),
            (opts.malformed, lambda: Misbehaviour(malformed_every=3)),
        ]
        wanted = [make for count, make in kinds for _ in range(count)][:total]
        step = max(1, total // max(1, len(wanted)))
        return {i * step: make() for i, make in enumerate(wanted)}

    async def stop(self, *, unregister: bool = True) -> None:
        """Unregister (optionally), wait for the answers (a few seconds at most), close sockets."""
        loop = asyncio.get_running_loop()
        if self._alarm_task is not None:
            self._alarm_task.cancel()
            await asyncio.gather(self._alarm_task, return_exceptions=True)
            self._alarm_task = None
        if self.control is not None:
            await self.control.cleanup()
            self.control = None
        for node in self.nodes:
            if node.media is not None:
                node.media.close()
            if node.playback is not None:
                node.playback.close()
            for agent in node.host.agents.values():
                agent.stop(loop.time(), unregister=unregister)
        if unregister:
            await self._unregistered(UNREGISTER_WAIT)
        for node in self.nodes:
            if node.driver is not None:
                node.driver.close()
        if self.audio is not None:
            self.audio.close()

    async def _unregistered(self, timeout: float) -> None:
        """Wait until no device's REGISTER Expires: 0 is still unanswered (or ``timeout`` passed)."""
        pending = [a for a in self.agents.values() if a.client.unregistering]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and loop.time() < deadline:
            await asyncio.sleep(0.02)  # the answers arrive through the drivers meanwhile
            pending = [a for a in pending if a.client.unregistering]
        if pending:
            log.info("%d simulated devices got no answer to their unregistration", len(pending))

    def summary(self) -> dict[str, Any]:
        """Counts by agent state, for progress lines and tests."""
        states: dict[str, int] = {}
        for agent in self.agents.values():
            states[agent.state.value] = states.get(agent.state.value, 0) + 1
        return {
            "devices": len(self.agents),
            "registered": states.get(AgentState.REGISTERED.value, 0),
            "states": states,
            "keepalives_sent": sum(a.stats.keepalives_sent for a in self.agents.values()),
            "refusals": sum(a.stats.refusals for a in self.agents.values()),
            "streams": sum(len(n.media.streams) for n in self.nodes if n.media is not None),
            "playbacks": sum(len(n.playback.streams) for n in self.nodes if n.playback is not None),
            "video_frames": self.media_totals().frames,
            "alarms_pressed": sum(a.stats.alarms_sent for a in self.agents.values()),
            "alarms_answered": sum(a.stats.alarms_answered for a in self.agents.values()),
            "alarm_responses": sum(a.stats.alarm_responses for a in self.agents.values()),
            "alarm_attempts": sum(a.stats.alarm_attempts for a in self.agents.values()),
        }

    # --- broadcast ---------------------------------------------------------------------------

    def heard(self, device_id: str) -> dict[str, Any] | None:
        """What the device (or the device of a channel) heard of its latest broadcast, or None."""
        agent = self.agents.get(device_id) or next((a for a in self.agents.values() if a.owns(device_id)), None)
        if agent is None or self.audio is None:
            return None
        return self.audio.heard(agent.profile.device_id) or {"device_id": agent.profile.device_id, "packets": 0}

    def end_broadcast(self, device_id: str) -> int:
        """The device hangs up its broadcast calls (BYE); how many."""
        loop = asyncio.get_running_loop()
        return sum(n.broadcast.hang_up(device_id, loop.time()) for n in self.nodes if n.broadcast is not None)

    # --- alarms ------------------------------------------------------------------------------

    def press(self, kindergarten: str | int | None = None, kind: str = "button") -> AlarmRecord:
        """Raise one alarm now and send it at once.

        ``kindergarten`` is a kindergarten ID, its index in :attr:`city`, or None for
        a random one that has a device for ``kind``. "button" presses the one-key
        alarm box, "perimeter" trips the perimeter alarm, the camera kinds come from
        the NVR (or the first IPC). Raises ValueError for an unknown kind and
        :class:`FleetLookupError` for an unknown kindergarten or a missing device.
        """
        if kind not in ALARM_KINDS:
            raise ValueError(f"unknown alarm kind {kind!r}; known: {', '.join(ALARM_KINDS)}")
        node = self._pick(kindergarten, kind)
        return self._press_on(node, alarm_device_of(node.plan, kind), kind)

    def press_registered(self, kind: str = "button") -> AlarmRecord:
        """Press ``kind`` in a random kindergarten whose device for it is registered right now.

        For measuring alarms during a registration storm: an alarm from a device the
        gateway has not registered yet is held (or refused), which is another story.
        Raises :class:`FleetLookupError` while no such device is registered.
        """
        if kind not in ALARM_KINDS:
            raise ValueError(f"unknown alarm kind {kind!r}; known: {', '.join(ALARM_KINDS)}")
        fitting = []
        for node in self.nodes:
            device = _find_alarm_device(node.plan, kind)
            agent = self.agents.get(device.id) if device is not None else None
            if device is not None and agent is not None and agent.registered:
                fitting.append((node, device))
        if not fitting:
            raise FleetLookupError(f"no device for {kind!r} alarms is registered yet")
        node, device = self._rng.choice(fitting)
        return self._press_on(node, device, kind)

    def press_all(self, kind: str = "button") -> list[AlarmRecord]:
        """Press ``kind`` once in every kindergarten that has the device, as fast as possible.

        Kindergartens without such a device (e.g. no perimeter alarm) are skipped.
        """
        if kind not in ALARM_KINDS:
            raise ValueError(f"unknown alarm kind {kind!r}; known: {', '.join(ALARM_KINDS)}")
        records = []
        for node in self.nodes:
            device = _find_alarm_device(node.plan, kind)
            if device is None:
                continue
            records.append(self._press_on(node, device, kind))
        return records

    def alarm_records(self) -> list[AlarmRecord]:
        """Every alarm the fleet raised (each device keeps its latest ones), oldest first."""
        records = [r for agent in self.agents.values() for r in agent.alarms.values()]
        records.sort(key=lambda r: (r.pressed_at, r.device_id, r.sn))
        return records

    def alarm_summary(self) -> dict[str, Any]:
        """Alarm counts, and which devices still wait for a 2xx (their IDs, sorted)."""
        records = self.alarm_records()
        unanswered = [r for r in records if not r.answered]
        return {
            "pressed": sum(a.stats.alarms_sent for a in self.agents.values()),
            "answered": sum(a.stats.alarms_answered for a in self.agents.values()),
            "responses": sum(a.stats.alarm_responses for a in self.agents.values()),
            "attempts": sum(a.stats.alarm_attempts for a in self.agents.values()),
            "messages": sum(a.stats.alarm_messages for a in self.agents.values()),
            "gave_up": sum(1 for r in records if r.gave_up and not r.answered),
            "no_response": sum(1 for r in records if r.answered and r.response_at is None),
            "unanswered": len(unanswered),
            "unanswered_ids": sorted({r.device_id for r in unanswered}),
        }

    def _pick(self, kindergarten: str | int | None, kind: str) -> KindergartenNode:
        if not self.nodes:
            raise FleetLookupError("the fleet has no kindergartens (not started?)")
        if kindergarten is None:
            fitting = [n for n in self.nodes if _find_alarm_device(n.plan, kind) is not None]
            if not fitting:
                raise FleetLookupError(f"no kindergarten has a device for {kind!r} alarms")
            return self._rng.choice(fitting)
        if isinstance(kindergarten, int) and not isinstance(kindergarten, bool):
            if not 0 <= kindergarten < len(self.nodes):
                raise FleetLookupError(f"no kindergarten #{kindergarten} (the city has {len(self.nodes)})")
            return self.nodes[kindergarten]
        node = self._by_id.get(str(kindergarten))
        if node is None:
            raise FleetLookupError(f"unknown kindergarten {kindergarten!r}")
        return node

    def _press_on(self, node: KindergartenNode, device: SimDevice, kind: str) -> AlarmRecord:
        assert node.driver is not None
        wall = datetime.fromtimestamp(time.time())  # local time: GB/T 28181 AlarmTime has no zone
        if node.recordings is not None:  # the site's cameras record around it (alarm files)
            node.recordings.add_alarm(int(wall.timestamp()))
        return node.host.press_alarm(device.id, node.driver.loop.time(), wall, kind=kind)

    async def _alarm_loop(self, rate: float) -> None:
        """Press random buttons (1 in 5: perimeter trips where there is one) at ``rate`` per second.

        Due alarms are counted from the start so the rate holds on average; a
        backlog longer than a second (a stalled loop) is dropped, not burst out.
        """
        loop = asyncio.get_running_loop()
        rng = random.Random(self.options.seed + 1)
        tick = max(1.0 / rate, 0.01)
        started, done = loop.time(), 0
        while True:
            await asyncio.sleep(tick)
            due = int((loop.time() - started) * rate)
            backlog = max(1, int(rate))  # a second's worth, and at least the one that is due
            if due - done > backlog:
                done = due - backlog
            while done < due:
                done += 1
                node = rng.choice(self.nodes)
                perimeter = rng.random() < PERIMETER_SHARE and _find_alarm_device(node.plan, "perimeter")
                kind = "perimeter" if perimeter else "button"
                try:
                    self.press(node.plan.id, kind)
                except (LookupError, ValueError) as exc:
                    log.warning("steady alarm not pressed: %s", exc)

    def faults_json(self) -> list[dict[str, Any]]:
        """The faulty kindergartens, in city order, with their names (``GET /faults``)."""
        plans = {k.id: k for k in self.city}
        items = []
        for faults in sorted(self.faults.values(), key=lambda f: f.index):
            item = faults.as_json()
            item["name"] = plans[faults.kindergarten_id].name
            item["description"] = describe(plans[faults.kindergarten_id], faults)
            items.append(item)
        return items

    def media_totals(self) -> StreamStats:
        """Frames, packets and bytes every camera of the fleet sent so far."""
        total = StreamStats()
        for node in self.nodes:
            if node.media is not None:
                total.add(node.media.totals())
        return total


def fleet_city(opts: FleetOptions) -> list[SimKindergarten]:
    """The kindergartens this simulator runs: the seeded city, only ``only_districts`` (if given),
    every ``n``-th from the ``i``-th of ``shard`` — so n processes with the same options share it."""
    city = build_city(opts.kindergartens, seed=opts.seed, cameras_per_kindergarten=opts.cameras, ipc_mode=opts.ipc_mode)
    if opts.only_districts:
        city = [k for k in city if k.district_code in opts.only_districts]
    shard, shards = opts.shard
    return city[shard::shards]


def alarm_device_of(kindergarten: SimKindergarten, kind: str) -> SimDevice:
    """The device of ``kindergarten`` that raises ``kind`` alarms; FleetLookupError if it has none."""
    device = _find_alarm_device(kindergarten, kind)
    if device is None:
        wanted = {"button": "one-key alarm box", "perimeter": "perimeter alarm"}.get(kind, "camera device")
        raise FleetLookupError(f"kindergarten {kindergarten.id} ({kindergarten.name}) has no {wanted}")
    return device


def _find_alarm_device(kindergarten: SimKindergarten, kind: str) -> SimDevice | None:
    if kind in CAMERA_ALARM_KINDS:
        kinds: tuple[str, ...] = ("nvr", "ipc")
    else:
        kinds = {"button": ("alarm_box",), "perimeter": ("perimeter_alarm",)}.get(kind, ())
    return next((d for want in kinds for d in kindergarten.devices if d.kind == want), None)


def _powered_off(agent: DeviceAgent, faults: KindergartenFaults | None) -> bool:
    """A camera that registers itself (an IPC) and is offline on purpose never registers."""
    if faults is None or not faults.offline or agent.profile.device_id[10:13] != "132":
        return False
    return all(c.device_id in faults.offline for c in agent.profile.channels)


def device_profile(
    device: SimDevice, kindergarten: SimKindergarten, password: str, *, offline: frozenset[str] = frozenset()
) -> DeviceProfile:
    """A device-role profile from the city plan; channels become catalog items.

    ``offline``: cameras that are dead on purpose; the device's catalog reports them OFF.
    """
    items = tuple(
        CatalogItem(
            device_id=channel.id,
            name=channel.name,
            manufacturer=device.manufacturer,
            model=device.model,
            owner="Owner",
            civil_code=kindergarten.district_code,
            address=channel.address,
            parental=0,
            parent_id=device.id,
            safety_way=0,
            register_way=1,
            secrecy=0,
            status="OFF" if channel.id in offline else "ON",
            longitude=channel.longitude,
            latitude=channel.latitude,
            ptz_type=ptz_type_for(channel),
        )
        for channel in device.channels
    )
    return DeviceProfile(
        device_id=device.id,
        password=password,
        name=device.name,
        manufacturer=device.manufacturer,
        model=device.model,
        firmware=device.firmware,
        channels=items,
        user_agent=f"{device.manufacturer} kgw-sim",
    )


def provision(
    api: str,
    city: list[SimKindergarten],
    chunk: int = 500,
    *,
    confirm_areas: bool = True,
    token: str | None = None,
    cafile: str | None = None,
) -> None:
    """POST the city's kindergartens to the gateway API with an API token (blocking; run in a thread).

    With ``confirm_areas`` each kindergarten carries its cameras' areas as the
    installer confirmed them from the plan (what lets police see entrance cameras).
    ``cafile``: trust this certificate for an https API (the demo's own, whatever name it was made for)."""
    token = token or os.environ.get("KGW_API_TOKEN") or None
    context = None
    if cafile:
        context = ssl.create_default_context(cafile=cafile)
        context.check_hostname = False  # our own certificate on loopback: the chain is what is checked
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "district_code": k.district_code,
            "address": k.address,
            "longitude": k.longitude,
            "latitude": k.latitude,
            **({"channels": installer_areas(k)} if confirm_areas else {}),
        }
        for k in city
    ]
    for start in range(0, len(rows), chunk):
        body = json.dumps(rows[start : start + chunk], ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(api.rstrip("/") + "/api/kindergartens", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            response.read()
    log.info("provisioned %d kindergartens at %s", len(rows), api)


def raise_fd_limit() -> None:
    """One socket per kindergarten: lift the soft file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
