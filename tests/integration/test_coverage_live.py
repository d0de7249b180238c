"""The coverage collector samples real live streams: RTP of a simulated camera counts for its kindergarten."""

from __future__ import annotations

from tests.conftest import wait_for


async def test_rtp_of_a_live_stream_counts_for_its_kindergarten(gateway_factory, fleet_factory):
    service = await gateway_factory(coverage_refresh=3600.0)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    (kg,) = fleet.city
    camera = next(c.id for d in kg.devices for c in d.channels if c.kind == "camera")
    assert await wait_for(lambda: getattr(service.directory.channels.get(camera), "online", False), 60)
    _stream, viewer = await service.live.watch(camera)
    coverage = service.coverage
    coverage.sample_streams(coverage.clock())  # the stream's counters so far: the baseline of its increments

    def counted() -> bool:
        coverage.sample_streams(coverage.clock())
        sample = coverage.loss.samples().get(kg.id)
        return sample is not None and sample.received >= 50

    assert await wait_for(counted, 30)
    sample = coverage.loss.samples()[kg.id]
    assert sample.lost == 0 and sample.loss_percent == 0.0  # loopback loses nothing
    row = {r.facts.id: r for r in coverage.evaluate(fresh=True).rows}[kg.id]
    assert row.facts.uplink == sample and "上行丢包" not in row.reason_text
    service.live.leave(camera, viewer)
