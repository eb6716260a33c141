"""Open-loop load on an app that is already running (``make demo``), with the demo's key.

    python -m benchmarks.demo_load [--url http://127.0.0.1:8000] [--rate 50] [--seconds 20]
        [--out benchmarks/results/demo_load.json]

Issue 13's check of the shipped config: ``make demo`` (``configs/serve.yaml`` on a local Ray of
2 CPUs) holds 50 requests/s for 20 s with no errors. ``POST /v1/recommend`` for the demo
tenant's users (the ``tiny`` preset's ``u0000000``...), through :mod:`benchmarks.loadgen`
(loopback only, latency from the scheduled send time). Not a ``bench_*`` script: it starts
nothing and needs the demo running, so ``make bench`` does not run it. Writes the loader's
figures, the UTC time, the load average before and after, and the CPU seconds of this client.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.loadgen import run as loadgen
from deployments.demo_requests import DEMO_KEY


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the app's base URL (loopback)")
    p.add_argument("--key", default=DEMO_KEY)
    p.add_argument("--rate", type=float, default=50)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--users", type=int, default=200, help="users u0000000.. (the tiny preset has 300)")
    p.add_argument("--out", default="benchmarks/results/demo_load.json")
    a = p.parse_args(argv)
    url = f"{a.url.rstrip('/')}/v1/recommend"
    result = {"url": url, "at": datetime.now(UTC).isoformat(timespec="seconds"),
              "load_average_before": os.getloadavg()}  # fmt: skip
    cpu0 = time.process_time()
    stats = loadgen(url, a.rate, a.seconds,
                    lambda i: {"user_id": f"u{i % a.users:07d}", "surface": "home", "k": 10},
                    {"Authorization": f"Bearer {a.key}"})  # fmt: skip
    result.update(stats, client_cpu_s=round(time.process_time() - cpu0, 2),
                  load_average_after=os.getloadavg())  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if stats["ok"] == stats["requests"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
