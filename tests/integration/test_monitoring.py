"""The monitoring kgw ships (deploy/prometheus, deploy/grafana) is valid and reads what kgw exports.

* The alerting rules and the Prometheus configuration pass ``promtool check`` (Debian's
  ``prometheus`` package, installed by scripts/setup.sh: a missing promtool fails here, it
  does not skip), and ``promtool test rules`` fires a few alerts on synthetic series.
* Grafana is not installable from PyPI or Debian, so its validator cannot run here: the
  dashboard's structure (panels, targets, data source uid, templating) is checked instead,
  and every query in it is parsed by promtool's PromQL parser as a recording rule.
* Every metric the dashboard and the rules name is exported by a running gateway with a
  city of devices, a webhook sink, an upper platform and a refused device; no exported
  series carries a device or channel ID, and district series are bounded by districts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.config import UpperSpec
from gateway.coverage.model import CoverageStatus
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gateway.httpapi.metrics import FAILURE_CLASSES, KINDERGARTEN_STATES
from gbplatform.ids import platform_id
from tests.conftest import free_ports, http_text, wait_for
from tests.integration.test_alarms_webhook import SECRET, WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kgw.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DATASOURCE_UID = "kgw-prometheus"
#: Series Prometheus makes itself (not the gateway's to export).
PROMETHEUS_OWN = frozenset({"up"})
_PROMQL_WORDS = frozenset(
    {"sum", "by", "rate", "max", "min", "and", "or", "unless", "histogram_quantile", "deriv", "without", "on"}
)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/setup.sh installs it (Debian package prometheus)")
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def _metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (kgw_* and Prometheus's own ``up``)."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_labels = re.sub(r"\{[^}]*\}", "", no_strings)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_labels)
    no_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", no_ranges)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", no_groupings))
    return {w for w in words if w.startswith("kgw_") or w in PROMETHEUS_OWN} - _PROMQL_WORDS


# --- the real tools' validators ----------------------------------------------------------------


def test_promtool_checks_the_rules_and_the_config(tmp_path: Path) -> None:
    result = _run("check", "rules", str(PROMETHEUS / "alerts.yml"), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    # The config names the compose secret and the rules beside it: check a copy where both exist.
    config = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    assert "credentials_file: /run/secrets/metrics_token" in config
    (tmp_path / "metrics_token").write_text("kgw_token\n", encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/run/secrets/metrics_token", str(tmp_path / "metrics_token")), encoding="utf-8"
    )
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    result = _run("check", "config", str(tmp_path / "prometheus.yml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_tests_fire_the_alerts() -> None:
    result = _run("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"))
    alerts = {t["alertname"] for case in tested["tests"] for t in case["alert_rule_test"]}
    assert {
        "KgwDevicesOffline",
        "KgwKindergartensOffline",
        "KgwAlarmDeadLetters",
        "KgwKindergartensNotConnected",
        "KgwAcceptanceDrillOverdue",
    } <= alerts


def test_every_alert_the_issue_asks_for_is_a_rule() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    names = {name: _metric_names(rule["expr"]) for name, rule in alerts.items()}
    wanted = {
        "KgwDevicesOffline": "kgw_district_devices_online",
        "KgwKindergartensOffline": "kgw_district_kindergartens",
        "KgwRegistrationFailures": "kgw_registration_failures_total",
        "KgwAlarmOutboxGrowing": "kgw_alarm_outbox_depth",
        "KgwAlarmDeadLetters": "kgw_alarm_dead_letters",
        "KgwAlarmDeliveryLatencyHigh": "kgw_alarm_delivery_latency_seconds_bucket",
        "KgwUpperPlatformOffline": "kgw_upper_platform_registered",
        "KgwRtpLossHigh": "kgw_rtp_lost_total",
        "KgwKindergartensNotConnected": "kgw_kindergartens",
        "KgwAcceptanceDrillOverdue": "kgw_acceptance_overdue",
    }
    for alert, metric in wanted.items():
        assert metric in names[alert], (alert, names.get(alert))
    for rule in alerts.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# --- the dashboard (Grafana's validator is not available here) ------------------------------------


def test_dashboard_structure() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["type"] in ("stat", "timeseries", "table", "bargauge", "gauge"), panel["title"]
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID and target["expr"].strip()
            if "_total" in target["expr"] or "_bucket" in target["expr"]:
                assert "rate(" in target["expr"], f"{panel['title']}: a counter is graphed as a rate"
    # Templated by node and district; every query of per-process series filters by the node.
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) >= {"node", "district"}
    for variable in variables.values():
        assert variable["type"] == "query" and variable["datasource"]["uid"] == DATASOURCE_UID
        assert variable["multi"] and variable["includeAll"]
    assert "kgw_node_info" in variables["node"]["definition"]
    for expr in _dashboard_exprs():
        assert '$node"' in expr, expr
        if "kgw_district_" in expr:
            assert 'district=~"$district"' in expr, expr
    # Chinese titles for operators' Grafana; English in every description.
    assert all(re.search(r"[\u4e00-\u9fff]", p["title"]) for p in graphs)


def test_grafana_provisioning_points_at_the_dashboard_and_the_datasource() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    [source] = sources["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "kgw.yml").read_text(encoding="utf-8"))
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query (Grafana's variables replaced by what they expand to)."""
    rules = []
    for i, expr in enumerate(_dashboard_exprs()):
        concrete = expr.replace("$__rate_interval", "1m").replace("$node", ".*").replace("$district", ".*")
        assert "$" not in concrete, expr
        rules.append({"record": f"kgw_dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = _run("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- against a running gateway -------------------------------------------------------------------


def _exported(text: str) -> tuple[set[str], list[tuple[str, dict[str, str]]]]:
    """Series names a scrape offers (samples and, for empty families, what their type defines), and its samples."""
    names: set[str] = set()
    samples: list[tuple[str, dict[str, str]]] = []
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        for sample in family.samples:
            names.add(sample.name)
            samples.append((sample.name, dict(sample.labels)))
    return names, samples


@pytest.fixture
async def webhook() -> Any:
    receiver = WebhookReceiver()
    yield receiver
    await receiver.stop()


async def test_every_metric_the_dashboard_and_rules_name_is_exported_and_labels_are_bounded(
    gateway_factory: Any, fleet_factory: Any, webhook: WebhookReceiver
) -> None:
    url = await webhook.start()
    police = UpperSpec(  # an upper that never answers: registered stays 0 (alert KgwUpperPlatformOffline)
        UpperPlatformConfig(
            name="police",
            server_id=platform_id("police", None),
            host="127.0.0.1",
            port=free_ports(1),
            password="pw-police-upper",
            register_retry_min=0.2,
            register_retry_max=1.0,
        ),
        SharePolicy(PolicyLevel("police"), None),
    )
    service = await gateway_factory(
        webhook_url=url, webhook_secret=SECRET, webhook_timeout=10.0, upper_platforms=(police,)
    )
    # 16 kindergartens cover the city's 16 districts; every camera registers itself (ipc mode).
    fleet = await fleet_factory(service, kindergartens=16, cameras=(2, 2), ipc_mode=True, wrong_password=1)
    honest = len(fleet.agents) - 1
    assert await wait_for(lambda: service.directory.online_counts()[1] == honest, 60)
    record = fleet.press(0, "button")
    assert await wait_for(lambda: len(webhook.received) == 1 and record.answered, 30)

    text = await http_text(f"http://127.0.0.1:{service.http_port}/metrics")
    exported, samples = _exported(text)

    referenced = set().union(*(_metric_names(e) for e in [*_dashboard_exprs(), *_rule_exprs()]))
    assert "kgw_district_kindergartens" in referenced and "kgw_registration_failures_total" in referenced
    missing = referenced - exported - PROMETHEUS_OWN
    assert not missing, f"named by the dashboard or the rules but not exported: {sorted(missing)}"

    # What the dashboard shows is what happened: every district has its devices; the refused device counts as auth.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    online = {s.labels["district"]: s.value for s in families["kgw_district_devices_online"].samples}
    assert set(online) == set(TIANJIN_DISTRICTS) and sum(online.values()) == honest
    failures = {s.labels["reason"]: s.value for s in families["kgw_registration_failures"].samples}
    assert set(failures) == set(FAILURE_CLASSES) and failures["auth"] >= 1
    states = {
        (s.labels["district"], s.labels["state"]): s.value for s in families["kgw_district_kindergartens"].samples
    }
    assert sum(states.values()) == 16 and {state for _, state in states} == set(KINDERGARTEN_STATES)
    [info] = families["kgw_node_info"].samples
    assert info.labels == {"node": "gateway", "gateway_id": service.config.id, "role": "gateway"}
    registered = {s.labels["platform"]: s.value for s in families["kgw_upper_platform_registered"].samples}
    assert registered == {"police": 0}
    latency = families["kgw_alarm_delivery_latency_seconds"].samples
    assert any(s.name.endswith("_count") and s.labels["sink"] == "webhook" and s.value == 1 for s in latency)

    # Cardinality: no device or channel ID in any label; district series bounded by the districts.
    ids = set(service.directory.devices) | set(service.directory.channels) | set(fleet.agents)
    for name, labels in samples:
        leaked = {k: v for k, v in labels.items() if v in ids or (re.fullmatch(r"\d{20}", v) and k != "gateway_id")}
        assert not leaked, f"{name} carries a device/channel ID: {leaked}"
    per_district = [(n, labels) for n, labels in samples if "district" in labels and n != "kgw_node_district"]
    districts = {labels["district"] for _, labels in per_district}
    assert districts <= set(TIANJIN_DISTRICTS) | {"other"}
    # Per district: devices known/online, acceptance overdue, kindergartens by state and by coverage status.
    assert len(per_district) <= len(districts) * (3 + len(KINDERGARTEN_STATES) + len(CoverageStatus))
    served = [labels["district"] for n, labels in samples if n == "kgw_node_district"]
    assert served == ["all"]  # one process serves the whole city
    assert len(samples) < 1000 + 16 * 10, "a scrape's size does not grow with the devices"
