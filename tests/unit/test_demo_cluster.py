"""``kgw demo --gateways N``: the plan of the gateway children and the TOML each one reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser, gateway_config_from_args
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from simulators.demo_cluster import plan_gateways, toml_config


@pytest.mark.parametrize("count", [1, 2, 3, 4, 16])
def test_the_districts_are_split_once_each_and_every_peer_names_the_others(count: int) -> None:
    plans = plan_gateways(count, 5060, 8080)
    served = [code for plan in plans for code in plan.districts]
    assert sorted(served) == sorted(TIANJIN_DISTRICTS) and len(served) == len(set(served))
    assert max(len(p.districts) for p in plans) - min(len(p.districts) for p in plans) <= 1
    assert plans[0].gateway_id == "12010000002090000001" and plans[0].http_port == 8080
    ports = [p.sip_port for p in plans] + [p.http_port for p in plans]
    assert len(set(ports)) == len(ports) and not {8081, 8099} & set(ports)  # platforms, control
    assert len({p.media_ports for p in plans}) == count
    for plan in plans:
        assert len(plan.peers) == count - 1


def test_a_child_command_line_and_its_toml_make_the_configuration_it_was_planned_with(tmp_path: Path) -> None:
    plan = plan_gateways(2, 15060, 18080)[1]
    uppers = [
        {"name": "municipal", "level": "municipal", "server_id": "12010000002000000001", "host": "127.0.0.1",
         "port": 5070, "password": "upper-secret"},
    ]  # fmt: skip
    tokens = [{"name": "sim", "role": "city_admin", "sha256": "ab" * 32}]
    path = tmp_path / "gw2.toml"
    path.write_text(toml_config({"db": str(tmp_path / "c.db"), "media_ports": plan.media_ports}, uppers, tokens))
    argv = plan.argv(str(path))
    args = build_parser().parse_args(argv[argv.index("gateway") :])
    config = gateway_config_from_args(args)
    assert (config.node, config.id, config.districts) == (plan.node, plan.gateway_id, plan.districts)
    assert config.media_ports == plan.media_ports and config.sip_port == 15061
    assert [p.spec() for p in config.peers] == list(plan.peers)
    assert config.upper_platforms[0].link.password == "upper-secret"
    with pytest.raises(ValueError):
        plan_gateways(17, 5060, 8080)
