"""Several simulator processes share one city: ``--shard I/N`` and ``--only-districts``."""

from __future__ import annotations

import pytest

from gateway.cli import build_parser, fleet_options_from_args
from simulators.fleet import fleet_city


def options(*flags: str):  # type: ignore[no-untyped-def]
    return fleet_options_from_args(build_parser().parse_args(["simulate", "--kindergartens", "200", *flags]))


def test_shards_partition_the_city() -> None:
    whole = [k.id for k in fleet_city(options())]
    parts = [[k.id for k in fleet_city(options("--shard", f"{i}/3"))] for i in range(3)]
    assert sorted(i for part in parts for i in part) == sorted(whole)
    assert all(abs(len(part) - len(whole) / 3) <= 1 for part in parts)
    assert not set(parts[0]) & set(parts[1])


def test_only_districts_keeps_those_districts_and_combines_with_shards() -> None:
    whole = fleet_city(options())
    codes = sorted({k.district_code for k in whole})[:2]
    mine = fleet_city(options("--only-districts", ",".join(codes)))
    assert mine and {k.district_code for k in mine} == set(codes)
    assert [k.id for k in mine] == [k.id for k in whole if k.district_code in codes]
    halves = [fleet_city(options("--only-districts", ",".join(codes), "--shard", f"{i}/2")) for i in range(2)]
    assert sorted(k.id for half in halves for k in half) == sorted(k.id for k in mine)


@pytest.mark.parametrize("bad", ["3/3", "-1/2", "x", "1/0", "1"])
def test_a_bad_shard_is_refused(bad: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--shard", bad])
