"""Batch scoring throughput: users scored per second through the whole serving pipeline
(retrieve → rules → rank → slate), stage by stage over micro-batches of users as
``training.batch_score`` runs it (its actor, :class:`training.batch_score.SlateScorer`, called
once per micro-batch: :func:`serving.batch.recommend_many` and the recs table), against the
same pipeline one request at a time. Wall time and this process's CPU time (``users_per_cpu_s``:
what a loaded, shared machine distorts least). In process, one Python process (what one Ray Data
actor of the job does); models at the sizes of ``configs/train/*.yaml`` with fresh weights.

    python -m benchmarks.bench_batch_score [--preset small] [--users 1000] [--surfaces email,home]
        [--batch-size 256] [--quick] [--batched-only]

Writes ``benchmarks/results/bench_batch_score.json`` (``bench_batch_score_quick.json`` with
``--quick``: tiny preset, 100 users) with the load average before and after each measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from benchmarks.bench_serving import _arch

REPO = Path(__file__).resolve().parents[1]


def _data(preset: str) -> Path:
    out = REPO / "var" / "bench_batch" / preset
    if not (out / "synth.json").exists():
        from datagen.synth import generate

        generate(preset, str(out), seed=0, progress=False)
    return out


def _platform(data: Path, root: Path) -> Path:
    platform = yaml.safe_load((REPO / "configs/platform.yaml").read_text())
    platform["storage"] = {"data": str(data), "events": str(data / "events"),
                           "registry": str(root / "registry"), "decisions": str(root / "decisions")}  # fmt: skip
    path = root / "platform.yaml"
    path.write_text(yaml.safe_dump(platform))
    return path


async def _one_at_a_time(stages, tenant: str, users: list[str], surfaces: list[str], k: int, now) -> int:
    from core.contracts import Query
    from serving.pipeline import RecommendationPipeline

    pipe, n = RecommendationPipeline(stages), 0
    for surface in surfaces:
        for user in users:
            q = Query(request_id=f"b-{surface}-{user}", tenant_id=tenant, user_id=user, surface=surface, k=k, now=now)
            n += bool((await pipe.recommend(q)).slate)
    return n


def _timed(fn) -> dict:
    """Wall seconds and this process's CPU seconds (all its threads): on a shared machine the
    CPU seconds move least with the neighbours' load."""
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "load_avg_before": load0, "load_avg_after": os.getloadavg(), "out": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--tenant", default="acme")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--surfaces", default="email,home")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="tiny preset, 100 users")
    p.add_argument("--batched-only", action="store_true",
                   help="only the job's path (also runs on an older checkout: the A/B in docs/performance.md)")  # fmt: skip
    p.add_argument("--out")
    a = p.parse_args(argv)
    if a.quick:
        a.preset, a.users = "tiny", 100
    out = Path(a.out or REPO / "benchmarks" / "results" / f"bench_batch_score{'_quick' if a.quick else ''}{'_batched' if a.batched_only else ''}.json")
    import torch

    torch.set_num_threads(1)  # one actor = one CPU, as the job's actors are sized
    from core.catalogue import Catalogue
    from core.registry import Registry
    from tests.integration.serving_artifacts import publish_ranker, publish_two_tower
    from training.batch_score import SlateScorer, build_stages, freeze_heap, production_versions
    from training.quality_checks import users_table

    data = _data(a.preset)
    surfaces = a.surfaces.split(",")
    result: dict = {"preset": a.preset, "tenant": a.tenant, "surfaces": surfaces, "k": a.k, "batch_size": a.batch_size,
                    "at": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(), "per_surface": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        platform = _platform(data, root)
        registry = Registry(str(root / "registry"))
        cat = Catalogue.load(str(data), a.tenant)
        tt, _ = publish_two_tower(registry, cat, arch=_arch("two_tower", ("dim", "embed_dim", "hidden")), scann=len(cat) >= 10_000)
        publish_ranker(registry, cat, arch=_arch("ranker", ("embed_dim", "n_experts", "expert_hidden", "tower_hidden")), two_tower=tt)
        versions = production_versions(registry, a.tenant, "production")
        users = sorted(users_table(str(data), a.tenant)["user_id"].to_pylist())[: a.users]
        now = datetime.now(UTC)
        for surface in surfaces:
            # The job's actor itself (its stages, heap policy, recs table), one micro-batch a call.
            batched = SlateScorer(a.tenant, str(platform), [surface], a.k, versions, now.timestamp(), a.batch_size)
            plain = None if a.batched_only else build_stages(a.tenant, str(platform), [surface], versions, batched=False)
            freeze_heap()  # the same heap policy for the one-request path

            def run_batched(scorer=batched) -> int:
                table = pa.concat_tables([scorer(pa.table({"user_id": users[i : i + a.batch_size]}))
                                          for i in range(0, len(users), a.batch_size)])  # fmt: skip
                firsts = table.filter(pc.equal(table["rank"], 0))
                fallbacks = Counter(f or "none" for f in firsts["fallback"].to_pylist())
                with_item = table.filter(pc.is_valid(table["item_id"]))
                return len(pc.unique(with_item["user_id"])), dict(fallbacks)

            # Warm both paths first (first forward passes, lazily built tables): timed runs are
            # steady state. Measured back to back; the load average says how busy the box was.
            batched(pa.table({"user_id": users[:32]}))
            # The job folds each user's logged events when its micro-batch comes (not at start-up):
            # done here, outside the timed run, so both paths are timed from built user state
            # (what the one-request path's store holds from its start-up). Timed apart.
            states = getattr(batched, "user_states", None)
            fold = _timed(lambda s=states: s.prepare(users)) if states is not None else None
            if plain is not None:
                asyncio.run(_one_at_a_time(plain, a.tenant, users[:32], [surface], a.k, now))
            timed = {"batched": _timed(run_batched)}
            if plain is not None:
                timed["one_at_a_time"] = _timed(lambda stages=plain, surface=surface: asyncio.run(
                    _one_at_a_time(stages, a.tenant, users, [surface], a.k, now)))  # fmt: skip
            timed["batched"]["out"], fallbacks = timed["batched"]["out"]
            entry = {"users": len(users), "batched_fallbacks": fallbacks}
            if fold is not None:
                entry["user_state_fold"] = {"cpu_seconds": fold["cpu_seconds"], "seconds": fold["seconds"],
                                            "ms_cpu_per_user": 1000 * fold["cpu_seconds"] / len(users)}  # fmt: skip
                # what an actor of the job spends per user: its micro-batches and their users' fold
                timed["batched"]["with_fold_cpu_s"] = timed["batched"]["cpu_seconds"] + fold["cpu_seconds"]
            for name, t in timed.items():
                entry[name] = {"users_per_s": len(users) / t["seconds"], "seconds": t["seconds"],
                               "users_per_cpu_s": len(users) / t["cpu_seconds"], "cpu_seconds": t["cpu_seconds"],
                               "users_with_slate": t["out"], "load_avg_before": t["load_avg_before"],
                               "load_avg_after": t["load_avg_after"]}  # fmt: skip
                if "with_fold_cpu_s" in t:
                    entry[name]["users_per_cpu_s_with_fold"] = len(users) / t["with_fold_cpu_s"]
            result["per_surface"][surface] = entry
            said = [f"{n} {e['users_per_s']:.1f} users/s ({e['users_per_cpu_s']:.1f} per CPU-second)"
                    for n, e in entry.items() if n in timed]  # fmt: skip
            if plain is not None:
                entry["speedup"] = entry["batched"]["users_per_s"] / entry["one_at_a_time"]["users_per_s"]
                entry["speedup_cpu"] = entry["batched"]["users_per_cpu_s"] / entry["one_at_a_time"]["users_per_cpu_s"]
            folded = (f"; user states folded at {entry['user_state_fold']['ms_cpu_per_user']:.2f} ms CPU per user "
                      f"(batched with the fold: {entry['batched']['users_per_cpu_s_with_fold']:.1f} per CPU-second)") if fold else ""  # fmt: skip
            print(f"{surface}: {', '.join(said)}; batched fallbacks {fallbacks}{folded}; load {os.getloadavg()}", flush=True)
    result["target_users_per_s"] = 500
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
