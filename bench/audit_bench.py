"""Benchmark: what the audit trail costs (issue 10: auth and audit must not slow the hot paths).

1. ``record()`` on the event loop: µs per record (it only builds an entry and queues it).
2. Append: records/s chained and written to a SQLite file by the batched writer
   (``AuditTrail`` with its thread, ``synchronous=FULL``), from the first record()
   to the end of the final flush.
3. Verify: records/s read back in chain order and checked (``kgw audit verify``).
4. An audited HTTP route over real sockets (``POST /api/alarms/{id}/ack`` with a
   trivial handler): median and p99 latency with the audit middleware and without.

Usage: .venv/bin/python bench/audit_bench.py [--records 100000] [--requests 2000]
Prints a table and writes bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from gateway.audit.actions import AuditAction  # noqa: E402
from gateway.audit.chain import verify  # noqa: E402
from gateway.audit.sqlite_store import SqliteAuditStore  # noqa: E402
from gateway.audit.trail import AuditTrail  # noqa: E402
from gateway.httpapi.audit_routes import add_audit_routes  # noqa: E402
from gateway.httpapi.identity import PRINCIPAL_KEY  # noqa: E402
from gateway.security.principal import Principal, Role  # noqa: E402

LI = Principal("li", Role.DISTRICT_DUTY, district_code="120101", source="10.0.0.7")


async def record_and_append(path: str, n: int) -> dict[str, float]:
    trail = AuditTrail(SqliteAuditStore(path))
    await trail.start()
    start = time.perf_counter()
    record_time = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        trail.record(AuditAction.LIVE_VIEW, actor=LI, target=f"1201010000131{i:07d}", detail={"op": "open"})
        record_time += time.perf_counter() - t0
        if i % 500 == 499:
            await asyncio.sleep(0)  # the loop runs other work between requests; the writer gets its turn
    await trail.stop()
    total = time.perf_counter() - start
    return {"record_us": record_time / n * 1e6, "append_per_s": n / total, "append_s": total}


def verify_file(path: str) -> dict[str, float]:
    with SqliteAuditStore(path) as store:
        start = time.perf_counter()
        result = verify(store.records())
        elapsed = time.perf_counter() - start
    assert result.ok
    return {"verify_per_s": result.count / elapsed, "verify_s": elapsed, "verified": result.count}


async def http_latency(path: str, requests: int, audited: bool) -> dict[str, float]:
    @web.middleware
    async def principal(request: web.Request, handler):  # type: ignore[no-untyped-def]
        request[PRINCIPAL_KEY] = LI
        return await handler(request)

    async def ack(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"], "state": "acknowledged"})

    app = web.Application(middlewares=[principal])
    app.router.add_post("/api/alarms/{id}/ack", ack)
    trail = AuditTrail(SqliteAuditStore(path))
    if audited:
        await trail.start()
        add_audit_routes(app, trail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    times = []
    async with aiohttp.ClientSession() as session:
        for i in range(requests + 100):
            t0 = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/api/alarms/a{i}/ack", json={}) as resp:
                await resp.read()
            if i >= 100:  # warm-up
                times.append(time.perf_counter() - t0)
    await runner.cleanup()
    if audited:
        await trail.stop()
    times.sort()
    return {"median_ms": statistics.median(times) * 1e3, "p99_ms": times[int(len(times) * 0.99)] * 1e3}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "audit.db")
        append = await record_and_append(db, args.records)
        checked = verify_file(db)
        plain = await http_latency(str(Path(tmp) / "h0.db"), args.requests, audited=False)
        audited = await http_latency(str(Path(tmp) / "h1.db"), args.requests, audited=True)
        audited_again = await http_latency(str(Path(tmp) / "h2.db"), args.requests, audited=True)
        plain_again = await http_latency(str(Path(tmp) / "h3.db"), args.requests, audited=False)
    result = {
        "records": args.records,
        "requests": args.requests,
        **append,
        **checked,
        "http_plain": [plain, plain_again],
        "http_audited": [audited, audited_again],
    }
    print(f"{'measure':<44}{'value':>14}")
    print(f"{'record() on the event loop (µs/record)':<44}{append['record_us']:>14.2f}")
    print(f"{'appended + chained + fsynced (records/s)':<44}{append['append_per_s']:>14,.0f}")
    print(f"{'verified (records/s)':<44}{checked['verify_per_s']:>14,.0f}")
    for name, runs in (("without audit", [plain, plain_again]), ("with audit", [audited, audited_again])):
        for run in runs:
            print(f"{'POST ack ' + name + ' median / p99 (ms)':<44}{run['median_ms']:>7.3f} /{run['p99_ms']:>6.3f}")
    out = ROOT / "bench" / "results" / "audit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
