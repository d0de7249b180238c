"""``kgw demo``: the whole three-level system on one machine, on embedded defaults.

One process runs: the 16 district platforms, the municipal platform and the
police platform (each a :class:`GatewayService` with a platform ID and its own
console); the access gateway, which registers with all 18 of them and shares
with each what its policy allows; a simulated city of kindergartens pressing an
alarm button now and then; and, when Mosquitto is installed, an MQTT broker
with the simulated police alarm integration subscribed to it.

Every console of the demo shares one account file (``accounts.db`` in the data
directory): the demo administrator ``admin`` gets a fresh random password at
each start (printed in the banner), and one login is valid on all 19 consoles,
which a browser reaches on the same host (the session cookie is per host, not
per port).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.app import GatewayService
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.config import UpperSpec, load_config
from gateway.deployment import DEFAULT_DEVICE_PASSWORD
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gateway.gb28181.sip.transport import Transport
from gateway.pg_connect import is_postgres_url
from gateway.security.accounts import ApiToken, User, secret_digest
from gateway.security.passwords import hash_password
from gateway.security.principal import Role
from gateway.security.service import new_token_secret
from gateway.security.sqlite_accounts import open_account_store
from gbplatform.app import build_gateway, build_platform
from gbplatform.ids import platform_id
from simulators.demo_cluster import GatewayChild, child_env, plan_gateways, split_city_ports, stop_all, toml_config
from simulators.demo_ports import DemoPorts, demo_platforms, ensure_free
from simulators.faults import DEMO_FAULTS, Fault, FaultError, FaultSpec, parse_faults
from simulators.fleet import Fleet, FleetOptions
from simulators.hevc import DEMO_HEVC_SHARE
from simulators.mosquitto import MosquittoBroker, mosquitto_available
from simulators.police_receiver import PoliceReceiver, format_report
from simulators.postgres import PostgresServer
from simulators.upper_down import UpperDown, install

log = logging.getLogger("kgw.demo")

__all__ = ["Demo", "DemoOptions"]

PLATFORM_PASSWORD_BYTES = 12  # each platform gets its own random password per run (issue 10, H1)
DEMO_ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``kgw demo`` can set."""

    kindergartens: int = 20
    sip_port: int = 5060
    http_port: int = 8080  # the gateway's; platforms use the next 18 ports (simulators/demo_ports.py)
    data_dir: str = "var/demo"
    transport: str = "udp"
    keepalive_interval: float = 20.0
    alarm_rate: float = 1 / 30
    control_port: int | None = None  # default: the port after the platforms' consoles (8099)
    escalate_after: float = 120.0
    mqtt: bool = True
    platforms: bool = True
    tls_cert: str = ""  # serve every console over HTTPS (PEM files)
    tls_key: str = ""
    gateways: int = 1  # > 1: that many gateway processes splitting the districts (simulators/demo_cluster.py)
    db: str = ""  # gateways > 1: the shared database ("" = an embedded PostgreSQL); else the gateway's
    # Kindergartens (and upper platforms) that fail on purpose (simulators/faults.py); None: DEMO_FAULTS,
    # those of them within the city.
    faults: tuple[str, ...] | None = None


@dataclass
class Demo:
    """Starts and stops everything of the demo, in dependency order."""

    options: DemoOptions
    platforms: dict[str, GatewayService] = field(default_factory=dict)  # name -> platform
    gateway: GatewayService | None = None
    fleet: Fleet | None = None
    broker: MosquittoBroker | None = None
    police_receiver: PoliceReceiver | None = None
    platform_passwords: dict[str, str] = field(default_factory=dict)  # name -> what the gateway registers with
    admin_password: str = ""  # the demo administrator's, new at each start
    children: list[GatewayChild] = field(default_factory=list)  # --gateways N: the gateway processes
    postgres: PostgresServer | None = None  # --gateways N without --db: the embedded database
    uppers: dict[str, UpperDown] = field(default_factory=dict)  # each platform's upper-down switch
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def fault_specs(self) -> tuple[FaultSpec, ...]:
        """The demo's faults: ``--fault`` as given, else the default ones that fit the city."""
        opts = self.options
        if opts.faults is not None:
            return parse_faults(opts.faults)
        defaults = parse_faults(DEMO_FAULTS)
        return tuple(s for s in defaults if isinstance(s.target, int) and s.target < opts.kindergartens)

    @property
    def ports(self) -> DemoPorts:
        """The demo's fixed ports (raises ConfigError for a plan that collides)."""
        opts = self.options
        return DemoPorts(sip=opts.sip_port, http=opts.http_port, control=opts.control_port, platforms=opts.platforms)

    async def start(self) -> None:
        """Platforms first (the gateway registers with them), then the gateway, broker and city."""
        opts = self.options
        ensure_free(self.ports.uses())  # a clear error naming the port, before anything binds
        specs = self.fault_specs()  # a bad --fault fails before anything starts
        down = {str(s.target) for s in specs if s.fault is Fault.UPPER_DOWN}
        names = {p.name for p in demo_platforms()} if opts.platforms else set()
        if down - names:
            raise FaultError(f"upper-down of an unknown platform: {', '.join(sorted(down - names))}")
        Path(opts.data_dir).mkdir(parents=True, exist_ok=True)
        if opts.gateways > 1 and not opts.db:  # before the accounts: they live in the same database
            self.postgres = PostgresServer()
            await asyncio.to_thread(self.postgres.start)
        self.admin_password = secrets.token_urlsafe(12)
        await asyncio.to_thread(self._reset_admin)
        if opts.platforms:
            await self._start_platforms()
            for name, service in self.platforms.items():  # every platform can be taken down at run time
                self.uppers[name] = install(service, down=name in down)
        mqtt = ""
        if opts.mqtt and mosquitto_available():
            self.broker = MosquittoBroker()
            await self.broker.start()
            mqtt = self.broker.url
        elif opts.mqtt:
            log.warning("mosquitto is not installed (run scripts/setup.sh): alarms go to the platforms and API only")
        fleet_token = new_token_secret()  # the simulator provisions its kindergartens with it
        if opts.gateways > 1:
            await self._start_split_city(mqtt, fleet_token)
            return
        uppers = tuple(self._upper_spec(name, service) for name, service in self.platforms.items())
        config = load_config(
            None,
            sip_port=opts.sip_port,
            http_port=opts.http_port,
            db=opts.db or f"{opts.data_dir}/gateway.db",
            api_tokens=(ApiToken("demo-simulator", secret_digest(fleet_token), Role.CITY_ADMIN),),
            **self._login_settings(),
            keepalive_interval=opts.keepalive_interval,
            flush_interval=1.0,
            mqtt=mqtt,
            alarm_escalate_after=opts.escalate_after,
            upper_platforms=uppers,
        )
        self.gateway = build_gateway(config)
        await self.gateway.start()
        await self._start_police()
        api = f"{self.scheme}://127.0.0.1:{self.gateway.http_port}"
        await self._start_fleet(self.gateway.sip_port, config.id, config.password, api, fleet_token)

    async def _start_police(self) -> None:
        if self.broker is not None:
            self.police_receiver = PoliceReceiver(
                self.broker.url,
                topic=("kgw/alarms/#", "kgw/escalations/#"),
                client_id="kgw-demo-police",
                persistent=True,
            )
            await self.police_receiver.start()
            self._tasks.append(asyncio.create_task(self._report()))

    async def _start_fleet(
        self, sip_port: int, gateway_id: str, password: str, api: str, token: str, also: tuple[str, ...] = ()
    ) -> None:
        opts = self.options
        self.fleet = Fleet(
            FleetOptions(
                gateway_port=sip_port,
                gateway_id=gateway_id,
                password=password,
                kindergartens=opts.kindergartens,
                transport=Transport(opts.transport.upper()),
                keepalive_interval=opts.keepalive_interval,
                api=api,
                also_provision=also,
                api_token=token,
                api_cafile=opts.tls_cert or None,
                alarm_rate=opts.alarm_rate,
                control_port=self.ports.control_port,
                hevc_share=DEMO_HEVC_SHARE,  # some cameras are H.265: the console plays them transcoded
                faults=tuple(s for s in self.fault_specs() if s.fault is not Fault.UPPER_DOWN),
            ),
            uppers=self.uppers,
        )
        await self.fleet.start()

    async def _start_split_city(self, mqtt: str, fleet_token: str) -> None:
        """``--gateways N``: N gateway processes on one database, the city registering at gateway 1's address."""
        opts = self.options
        plans = plan_gateways(opts.gateways, opts.sip_port, opts.http_port)
        ensure_free([use for plan in plans[1:] for use in split_city_ports(plan)])
        db = self._database()
        uppers = [self._upper_table(name, service) for name, service in self.platforms.items()]
        tokens = [{"name": "demo-simulator", "role": "city_admin", "sha256": secret_digest(fleet_token)}]
        env = child_env()
        for plan in plans:
            settings: dict[str, Any] = {
                "db": db,
                "accounts_db": self._login_settings()["accounts_db"],
                "keepalive_interval": opts.keepalive_interval,
                "flush_interval": 1.0,
                "alarm_escalate_after": opts.escalate_after,
                "media_ports": plan.media_ports,
                "mqtt": mqtt,
                "download_dir": f"{opts.data_dir}/downloads-{plan.node}",
            }
            if opts.tls_cert:
                settings.update(tls_cert=opts.tls_cert, tls_key=opts.tls_key)
            child = GatewayChild(plan, Path(opts.data_dir), toml_config(settings, uppers, tokens), env)
            child.start()
            self.children.append(child)
        await asyncio.gather(*(child.ready(self.scheme) for child in self.children))
        await self._start_police()
        first, apis = plans[0], [f"{self.scheme}://127.0.0.1:{p.http_port}" for p in plans]
        await self._start_fleet(
            first.sip_port, first.gateway_id, DEFAULT_DEVICE_PASSWORD, apis[0], fleet_token, tuple(apis[1:])
        )

    def _upper_table(self, name: str, service: GatewayService) -> dict[str, Any]:
        """A platform as a ``[[upper_platforms]]`` table of a gateway child's TOML file."""
        level = "district" if name.startswith("district-") else name
        table: dict[str, Any] = {
            "name": name,
            "level": level,
            "server_id": service.config.id,
            "host": "127.0.0.1",
            "port": service.sip_port,
            "password": self.platform_passwords[name],
            "keepalive_interval": self.options.keepalive_interval,
        }
        if level == "district":
            table["district"] = name.removeprefix("district-")
        return table

    @property
    def scheme(self) -> str:
        """``https`` when the consoles serve TLS."""
        return "https" if self.options.tls_cert else "http"

    def _database(self) -> str:
        """The gateways' database: ``--db``, else the embedded PostgreSQL of ``--gateways N``, else ""."""
        return self.options.db or (self.postgres.url if self.postgres is not None else "")

    def _login_settings(self) -> dict[str, Any]:
        """What every node of the demo shares: the accounts and TLS.

        On PostgreSQL the accounts live in the gateways' database (one login for every console,
        the platforms included); the platforms keep their registries in their own SQLite files
        in ``data_dir``: each is another GB/T 28181 system with its own devices, not this city's.
        """
        opts = self.options
        db = self._database()
        accounts = db if is_postgres_url(db) else f"{opts.data_dir}/accounts.db"
        return {"accounts_db": accounts, "tls_cert": opts.tls_cert, "tls_key": opts.tls_key}

    def _reset_admin(self) -> None:
        """Create (or reset) the demo administrator with this start's password; old sessions end."""
        now = time.time()
        store = open_account_store(self._login_settings()["accounts_db"])
        try:
            store.put_user(
                User(DEMO_ADMIN, hash_password(self.admin_password), Role.CITY_ADMIN, None, None, False, now, now)
            )
        finally:
            store.close()

    async def _start_platforms(self) -> None:
        opts = self.options
        for index, platform in enumerate(demo_platforms()):
            # Every upper link has its own credentials, never the devices' password (issue 10, H1).
            password = self.platform_passwords[platform.name] = secrets.token_urlsafe(PLATFORM_PASSWORD_BYTES)
            config = load_config(
                None,
                id=platform_id(platform.level, platform.district),
                role=platform.level,
                sip_port=0,
                http_port=self.ports.platform_http(index),
                password=password,
                db=f"{opts.data_dir}/{platform.name}.db",
                flush_interval=1.0,
                keepalive_interval=opts.keepalive_interval,
                alarm_escalate_after=opts.escalate_after,
                **self._login_settings(),
            )
            service = build_platform(config)
            await service.start()
            self.platforms[platform.name] = service

    def _upper_spec(self, name: str, service: GatewayService) -> UpperSpec:
        level = "district" if name.startswith("district-") else name
        district = name.removeprefix("district-") if level == "district" else None
        link = UpperPlatformConfig(
            name=name,
            server_id=service.config.id,
            host="127.0.0.1",
            port=service.sip_port,
            password=self.platform_passwords[name],
            keepalive_interval=self.options.keepalive_interval,
        )
        return UpperSpec(link, SharePolicy(PolicyLevel(level), district))

    async def _report(self) -> None:
        while self.police_receiver is not None:
            await asyncio.sleep(60)
            log.info("police receiver: %s", format_report(self.police_receiver.report()))

    def banner(self) -> str:
        """What to open, for the operator."""
        if self.children:
            return self._split_banner()
        assert self.gateway is not None and self.fleet is not None
        gw = self.gateway
        api = f"{self.scheme}://127.0.0.1:{gw.http_port}"
        ws = "wss" if self.scheme == "https" else "ws"
        lines = [
            f"kgw demo is running: {self.options.kindergartens} simulated kindergartens, "
            f"{len(self.fleet.agents)} devices registering with gateway {gw.config.id}",
            f"  login     {DEMO_ADMIN} / {self.admin_password}  "
            f"(demo administrator, {Role.CITY_ADMIN.label_zh}; one login for every console below)",
            f"  console   {api}/   (gateway: 实时视频 and 报警: log in, acknowledge alarms; /live/<channel id>)",
            f"  coverage  {api}/console/assets/coverage.html   (接入达标: which kindergartens are not fully connected)",
            f"  accept    {api}/console/assets/acceptance.html   (接入验收: a kindergarten's checks, snapshots, "
            "drill alarm and report; press the drill with the press line below and its kindergarten)",
            f"  rtsp      {api}/console/assets/rtsp.html   (RTSP/ONVIF cameras that do not speak GB/T 28181)",
        ]
        for name, service in self.platforms.items():
            label = {"municipal": "市级平台 municipal", "police": "公安平台 police"}.get(
                name, f"{TIANJIN_DISTRICTS.get(name.removeprefix('district-'), name)} district"
            )
            lines.append(f"  platform  {self.scheme}://127.0.0.1:{service.http_port}/   {label} ({service.config.id})")
        control = f"http://127.0.0.1:{self.fleet.control_port}"
        mqtt = self.broker.url if self.broker is not None else ""
        lines += [
            f"  SIP       udp/tcp 127.0.0.1:{gw.sip_port}",
            f"  ports     {self.ports.summary()}",
            f"  uppers    {api}/api/upper-platforms",
            f"  alarms    {api}/api/alarms   (live events: {ws}://127.0.0.1:{gw.http_port}/api/alarms/ws)",
            f'  press     curl -X POST {control}/press -d \'{{"kind": "button"}}\'   '
            "(kinds: button, perimeter, video_loss, tamper, disk_fault)",
            f"  police    {'MQTT ' + mqtt + ' topic kgw/alarms/<district>/<kindergarten>' if mqtt else 'no MQTT broker'}"
            f"{'   (drills: kgw/drills/...)' if mqtt else ''}",
            f"  health    {api}/healthz",
            f"  devices   {api}/api/devices?limit=20",
            f"  channels  {api}/api/channels?limit=20",
            f"  districts {api}/api/districts",
            f"  history   {api}/api/events",
            *self._fault_lines(control),
            f"  metrics   {api}/metrics   (the admin login, or an API token: kgw token add NAME --role city_admin "
            f"--metrics-only --db {self._login_settings()['accounts_db']})",
            "Press Ctrl-C to stop.",
        ]
        return "\n".join(lines)

    def _fault_lines(self, control: str) -> list[str]:
        """The banner's faulty kindergartens and the upper platforms' switch."""
        assert self.fleet is not None
        lines = [f"  fault     {item['description']}" for item in self.fleet.faults_json()]
        lines += [
            f"  fault     upper platform {n}: upper-down (alarms refused)" for n, u in self.uppers.items() if u.down
        ]
        if lines:
            lines.append(
                f"  faults    {control}/faults   (what fails on purpose: kgw demo --fault KG:MODE, --no-faults)"
            )
        if self.uppers:
            lines.append(
                f"  upper     curl -X PUT {control}/uppers/municipal -d '{{\"down\": true}}'   "
                "(take an upper platform's alarm intake down; false brings it back)"
            )
        return lines

    def _split_banner(self) -> str:
        """The banner of ``--gateways N``: every gateway's console, its districts and SIP port."""
        assert self.fleet is not None
        first = self.children[0].plan
        db = self._database()
        lines = [
            f"kgw demo is running: {self.options.kindergartens} simulated kindergartens, {len(self.fleet.agents)} "
            f"devices registering at the city address 127.0.0.1:{first.sip_port} (302 to their district's gateway), "
            f"{len(self.children)} gateway processes on {db.split('@')[-1]}",
            f"  login     {DEMO_ADMIN} / {self.admin_password}  (demo administrator; one login for every console)",
        ]
        for child in self.children:
            plan = child.plan
            names = "、".join(TIANJIN_DISTRICTS.get(code, code) for code in plan.districts)
            lines.append(
                f"  gateway   {self.scheme}://127.0.0.1:{plan.http_port}/   {plan.node} ({plan.gateway_id}), SIP "
                f"{plan.sip_port}, media {plan.media_ports}: {names}  (log {child.log_path})"
            )
        for name, service in self.platforms.items():
            lines.append(f"  platform  {self.scheme}://127.0.0.1:{service.http_port}/   {name} ({service.config.id})")
        api = f"{self.scheme}://127.0.0.1:{first.http_port}"
        lines += [
            f"  nodes     {api}/api/nodes   (every console lists the whole city: {api}/api/districts)",
            f'  press     curl -X POST http://127.0.0.1:{self.fleet.control_port}/press -d \'{{"kind": "button"}}\'',
            *self._fault_lines(f"http://127.0.0.1:{self.fleet.control_port}"),
            "Press Ctrl-C to stop.",
        ]
        return "\n".join(lines)

    async def stop(self) -> None:
        """Everything in reverse order; the gateway unregisters from its uppers on the way."""
        if self.fleet is not None:
            await self.fleet.stop()
        if self.gateway is not None:
            await self.gateway.stop()
        await stop_all(self.children)
        for service in self.platforms.values():
            await service.stop()
        if self.police_receiver is not None:
            print(f"police receiver: {format_report(self.police_receiver.report())}", flush=True)
            receiver, self.police_receiver = self.police_receiver, None
            await receiver.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.broker is not None:
            await self.broker.stop()
            self.broker.cleanup()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
            self.postgres.cleanup()
