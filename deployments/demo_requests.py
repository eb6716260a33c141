"""Send a few requests to a running app and print them readably (``make demo`` calls this).

    python -m deployments.demo_requests [--url http://127.0.0.1:8000] [--key acme-demo-key]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime

import requests

DEMO_KEY = "acme-demo-key"
"""The demo tenant's API key (``configs/platform.yaml`` keeps only its hash)."""


def _show(title: str, response: requests.Response) -> dict:
    print(f"\n== {title}: HTTP {response.status_code}")
    body = response.json()
    if "items" in body:
        print(f"request_id {body['request_id']}  fallback={body['fallback']}  "
              f"experiment={body['experiment']}  {body['latency_ms']:.1f} ms")  # fmt: skip
        print(f"versions {json.dumps(body['versions'])}")
        for item in body["items"]:
            print(f"  #{item['rank']:<2} {item['item_id']:<12} {item['score']:8.4f}  "
                  f"{','.join(item['sources']):<28} {' '.join(item['reasons'])}")  # fmt: skip
    else:
        print(json.dumps(body, indent=2)[:1500])
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", default=DEMO_KEY)
    p.add_argument("--user", default="u0001")
    args = p.parse_args(argv)
    base, headers = args.url.rstrip("/"), {"Authorization": f"Bearer {args.key}"}
    try:
        _show("GET /v1/healthz", requests.get(f"{base}/v1/healthz", timeout=10))
    except requests.ConnectionError:
        print(f"no app at {base}; deploy it first: recsys deploy configs/serve.yaml", file=sys.stderr)
        return 2
    _show("GET /v1/versions", requests.get(f"{base}/v1/versions", headers=headers, timeout=10))
    body = {"user_id": args.user, "surface": "home", "k": 5}
    rec = _show("POST /v1/recommend", requests.post(f"{base}/v1/recommend", json=body,
                                                      headers=headers, timeout=30))  # fmt: skip
    if rec.get("items"):
        hidden = rec["items"][0]["item_id"]
        event = {"event_id": uuid.uuid4().hex, "user_id": args.user, "item_id": hidden,
                 "event_type": "hide", "ts": datetime.now(UTC).isoformat(), "surface": "home",
                 "request_id": rec["request_id"], "position": 0}  # fmt: skip
        _show(f"POST /v1/events (hide {hidden})",
              requests.post(f"{base}/v1/events", json={"events": [event]}, headers=headers, timeout=30))  # fmt: skip
        _show("POST /v1/recommend again (the hidden item is gone)",
              requests.post(f"{base}/v1/recommend", json=body, headers=headers, timeout=30))  # fmt: skip
        decision = requests.get(f"{base}/v1/decisions/{rec['request_id']}", headers=headers, timeout=10)
        d = decision.json()
        print(f"\n== GET /v1/decisions/{rec['request_id']}: HTTP {decision.status_code}")
        print(f"sources: {[(s['source'], s['status'], s['candidates']) for s in d.get('sources', [])]}")
        print(f"stage latency ms: {d.get('stage_latency_ms')}  removals: {len(d.get('removals', []))}")
    print(f"\nTry next:\n  {base}/docs             (OpenAPI UI)\n  {base}/metrics"
          f"\n  {base}/v1/decisions/<request_id>  (with the same API key)"
          "\n  recsys scale Ingress 3   |   recsys capacity --target-rps 50")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
