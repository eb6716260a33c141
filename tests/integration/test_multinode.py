"""Two Ray nodes, one lost under traffic (issue 15): a worker node joins the session's head node
(``cluster.local.start_worker``: ``ray start --address``, on this machine); the
``TwoTowerRetriever`` and ``Ranker`` replicas are placed on it through a custom resource that
only it offers; the worker is killed (SIGKILL, not drained) while requests flow.

Shown: every request is answered 200 throughout; while the node is gone, answers say so
(``fallback`` or ``degraded`` set: the two-tower source and the ranker did not take part);
after a new worker joins (started as soon as the old one is killed, so that its start
overlaps the outage), Serve restarts the replicas there (not on the head, not on the lost
node) and answers are whole again (two-tower candidates, no fallback). Bounded: traffic at a few requests per second, every wait
polled with a deadline. KubeRay multi-node is not run here (no Kubernetes cluster reachable).
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
import yaml

from cluster.serve_files import SERVE_GPU, without_gpus
from core.catalogue import Catalogue
from core.registry import Registry
from tests.integration.serving_artifacts import publish_ranker, publish_two_tower
from tests.integration.test_serving_http import ACME, _test_platform_config

pytestmark = pytest.mark.integration
APP = "recsys-multinode"
WORKER = {"recsys_worker": 1.0}
ON_WORKER = ("TwoTowerRetriever", "Ranker")


def _recommend(base: str, i: int) -> requests.Response:
    body = {"user_id": f"u{i % 50:07d}", "surface": "home", "k": 10}
    return requests.post(f"{base}/v1/recommend", json=body, headers=ACME, timeout=60)


def _whole(answer: dict) -> bool:
    """Every source and the ranker took part."""
    return answer["fallback"] is None and not answer["degraded"]


def _deploy(root, tiny_data, port: int) -> None:
    """configs/serve.gpu.yaml (the shape with model deployments; no GPU here) through Serve's
    config path (as ``recsys deploy``), with the model deployments needing the worker's
    resource and one replica each."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    registry = Registry(str(root / "registry"))
    for tenant in ("acme", "globex"):
        catalogue = Catalogue.load(str(tiny_data), tenant)
        tt, _ = publish_two_tower(registry, catalogue)
        publish_ranker(registry, catalogue, two_tower=tt)
    raw = without_gpus(yaml.safe_load(SERVE_GPU.read_text()))
    (app,) = raw["applications"]
    app["name"] = APP
    app["args"].update(
        platform_config=_test_platform_config(root / "platform.yaml"), home=os.getcwd(),
        storage={"data": str(tiny_data), "events": str(root / "events"),
                 "registry": str(root / "registry"), "decisions": str(root / "decisions")},
    )  # fmt: skip
    raw["http_options"] = {"host": "127.0.0.1", "port": port}
    for d in app["deployments"]:
        # The models on the worker only; the Ingress and the decision log on the head only
        # (Ray gives the head node the resource "node:__internal_head__").
        where = {"recsys_worker": 0.1} if d["name"] in ON_WORKER else {"node:__internal_head__": 0.01}
        d["ray_actor_options"] = {**d.get("ray_actor_options", {}), "resources": where}
        if d["name"] in ON_WORKER:
            d.pop("autoscaling_config", None)
            d["num_replicas"] = 1
    client = serve_start(http_options=raw["http_options"], proxy_location=raw["proxy_location"])
    client.deploy_apps(ServeDeploySchema.model_validate(raw))
    client._wait_for_application_running(APP, timeout_s=600)


def _replica_nodes() -> dict[str, set[str]]:
    """Deployment name → node ids of its live replicas (from Ray's actor table)."""
    from ray.util.state import list_actors

    nodes: dict[str, set[str]] = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        for deployment in ON_WORKER:
            if (actor.class_name or "") == f"ServeReplica:{APP}:{deployment}":
                nodes.setdefault(deployment, set()).add(actor.node_id)
    return nodes


class _NodeStart(threading.Thread):
    """``cluster.local.start_worker`` in the background: a node's start (``ray start``, several
    seconds) overlaps what the test does meanwhile. :meth:`pgid` waits for it and returns the
    node's process group (for ``stop_worker``)."""

    def __init__(self, head, resources: dict[str, float]):
        super().__init__(daemon=True)
        self.head, self.resources = head, resources
        self.result: int | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self):
        from cluster import local

        try:
            self.result = local.start_worker(self.head, num_cpus=1, resources=self.resources)
        except BaseException as exc:  # raised by pgid()
            self.error = exc

    def pgid(self, timeout_s: float = 240) -> int:
        self.join(timeout_s)
        if self.error is not None:
            raise self.error
        assert self.result is not None, f"the worker node did not start in {timeout_s:.0f} s"
        return self.result


def _alive(node_id: str) -> bool:
    """Ray's view: ``node_id`` is a live node of the cluster."""
    import ray

    return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())


def _wait(condition, what: str, timeout_s: float = 300, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


def test_losing_the_node_of_the_model_replicas_degrades_and_recovers(
    ray_connected, tiny_data, tmp_path
):
    import ray
    from ray import serve

    from cluster import local

    head_node = ray.get_runtime_context().get_node_id()
    # The worker node starts while the models are published and the app deployed: Serve places
    # the model replicas there once it has joined.
    starting = _NodeStart(ray_connected, WORKER)
    nodes = [starting]
    try:
        port = local.free_port()
        _deploy(tmp_path, tiny_data, port)
        starting.pgid()
        base = f"http://127.0.0.1:{port}"
        placed = _replica_nodes()
        for name in ON_WORKER:  # on the worker, not on the head
            assert placed[name] and head_node not in placed[name], placed
        (lost_node,) = set().union(*placed.values())
        _wait(lambda: (r := _recommend(base, 0)).status_code == 200 and _whole(r.json()),
              "a whole answer", 120)  # fmt: skip

        answers: list[tuple[float, int, dict | None]] = []
        stop = threading.Event()

        def traffic():
            i = 0
            while not stop.is_set():
                r = _recommend(base, i)
                answers.append((time.monotonic(), r.status_code,
                                r.json() if r.status_code == 200 else None))  # fmt: skip
                i += 1
                time.sleep(0.3)

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            _wait(lambda: len(answers) >= 2, "answers before the kill", 60, 0.1)
            killed_at = time.monotonic()
            assert local.stop_worker(starting.pgid()) == 0
            # The node returns at once: its start (seconds of `ray start`) overlaps Ray declaring
            # the old one dead and the answers without the models.
            starting = _NodeStart(ray_connected, WORKER)
            nodes.append(starting)
            _wait(lambda: not _alive(lost_node), "the node to be lost", 120)
            # Answers go on, and say that the models did not take part.
            degraded_at = _wait(lambda: next((t for t, _, a in list(answers)
                                              if t > killed_at and a is not None and not _whole(a)), None),
                                "a degraded answer", 120)  # fmt: skip
            starting.pgid()
            _wait(lambda: any(t > degraded_at and a is not None and _whole(a) for t, _, a in list(answers)),
                  "whole answers after the node returned", 300)  # fmt: skip
        finally:
            stop.set()
            sender.join(timeout=120)
        statuses = [s for _, s, _ in answers]
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        during = [a for t, _, a in answers if t > killed_at and a is not None and not _whole(a)]
        assert all(a["fallback"] or a["degraded"] for a in during)
        placed = _replica_nodes()
        for name in ON_WORKER:  # restarted on the node that joined, not on the head
            assert placed[name] and not placed[name] & {head_node, lost_node}, placed
    finally:
        for node in nodes:
            node.join(240)
            if node.result is not None:
                local.stop_worker(node.result)
        try:
            serve.delete(APP)
        finally:
            serve.shutdown()


TRAIN_NODE = {"recsys_train": 1.0}


def test_a_two_tower_job_whose_worker_node_dies_resumes_from_its_last_checkpoint(
    ray_connected, tiny_data, two_tower_seed, tmp_path, monkeypatch
):
    """The job's one training worker runs on a worker node (a custom resource only that node
    offers); while it trains, a second node offering the same resource joins; once Ray Train
    has registered its first checkpoint the first node is killed (SIGKILL). Ray Train
    (``max_failures``) restarts the worker on the second node from that checkpoint, and the
    job finishes and publishes: every epoch is in the run's checkpoints exactly once, in
    order, with the optimiser step count carried across the restart (no epoch trained again
    from scratch).

    Then the finished run is continued for one more epoch with ``--resume`` (a job restarted
    by hand): the same run goes on at the next epoch from its newest checkpoint, with the step
    counter carried over, and publishes the model it finished."""
    import json

    import ray

    from cluster import local
    from tests.integration.training_env import REPO, platform_for, seed_work_dir
    from training import two_tower

    monkeypatch.setenv("RECSYS_CONFIG", str(platform_for(tiny_data, tmp_path)))
    head_node = ray.get_runtime_context().get_node_id()
    # The session's examples and data-quality report: this job trains, it does not rebuild them.
    seed_work_dir(two_tower_seed, tmp_path / "work")
    cfg = yaml.safe_load((REPO / "configs/train/two_tower.yaml").read_text())
    # Two epochs: the node dies after the first is registered, the second is trained after the
    # restart from that checkpoint; --resume then adds a third.
    epochs = 2
    cfg.update(work_dir=str(tmp_path / "work"), num_partitions=2, dim=16, embed_dim=16, hidden=32,
               batch_size=256, epochs=epochs, keep_checkpoints=epochs + 1, max_failures=2,
               worker_resources={"recsys_train": 0.5}, selection_users=50)  # fmt: skip
    config = tmp_path / "two_tower.yaml"
    config.write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "work" / "acme" / "runs"

    def registered() -> list[dict]:
        """The checkpoints Ray Train has registered (a checkpoint written by a worker that died
        before reporting it is not one), in the order they were reported."""
        snapshot = next(runs.glob("two_tower-acme-*/checkpoint_manager_snapshot.json"), None)
        if snapshot is None:
            return []
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (ValueError, KeyError):  # being written
            return []
        return [r["metrics"] for r in sorted(results, key=lambda r: r["checkpoint_dir_name"])]

    def checkpoint_meta(run_dir) -> list[dict]:
        """What each kept checkpoint's ``meta.json`` says (what a resumed worker reads)."""
        return sorted((json.loads(p.read_text()) for p in run_dir.glob("checkpoint_*/meta.json")),
                      key=lambda m: m["epoch"])  # fmt: skip

    def train_worker_nodes() -> set[str]:
        """Nodes of the job's live Ray Train workers (from Ray's actor table)."""
        from ray.util.state import list_actors

        alive = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        return {a.node_id for a in alive}

    # The node starts while the job prepares its data: the worker waits for its resource.
    first = _NodeStart(ray_connected, TRAIN_NODE)
    nodes = [first]
    outcome: dict = {}
    try:

        def train():
            try:
                outcome["rc"] = two_tower.main(["--config", str(config), "--tenant", "acme"])
            except BaseException as exc:  # reported by the assertion below
                outcome["error"] = repr(exc)

        job = threading.Thread(target=train)
        job.start()
        placed = _wait(lambda: train_worker_nodes() or not job.is_alive(), "the training worker", 300, 0.5)
        assert job.is_alive(), outcome
        (lost_node,) = placed
        assert lost_node != head_node
        # The replacement node joins once the worker is placed, while the first attempt trains:
        # its start (several seconds of `ray start`) overlaps the epoch instead of following
        # the loss, and the restart finds its resource at once.
        nodes.append(_NodeStart(ray_connected, TRAIN_NODE))
        _wait(lambda: registered() or not job.is_alive(), "the first checkpoint", 300)
        assert local.stop_worker(first.pgid()) == 0
        assert job.is_alive() and len(registered()) < epochs, outcome  # killed mid-run
        nodes[-1].pgid()
        job.join(timeout=420)
        assert not job.is_alive(), "the job did not finish after its node was lost"
        assert outcome.get("rc") == 0, outcome
        # Ray saw the node die: the second attempt ran on the node that joined (the only other
        # one offering the worker's resource).
        assert not _alive(lost_node)
        metas = registered()
        assert [m["epoch"] for m in metas] == list(range(epochs))  # none repeated, none missing
        per_epoch = metas[0]["steps"]
        assert per_epoch > 0 and [m["steps"] for m in metas] == [per_epoch * (e + 1) for e in range(epochs)]
        (run,) = runs.glob("two_tower-acme-*")
        registry = Registry(str(tmp_path / "registry"))
        assert registry.versions("two_tower", "acme")[-1].config["run"] == run.name

        # One more epoch of the same run, by hand: --resume.
        config.write_text(yaml.safe_dump({**cfg, "epochs": epochs + 1}))
        assert two_tower.main(["--config", str(config), "--tenant", "acme", "--resume"]) == 0
    finally:
        for node in nodes:
            node.join(240)
            if node.result is not None:
                local.stop_worker(node.result)
    assert list(runs.glob("two_tower-acme-*")) == [run]  # the same run went on
    metas = checkpoint_meta(run)
    assert [m["epoch"] for m in metas] == list(range(epochs + 1))
    assert [m["steps"] for m in metas] == [per_epoch * (e + 1) for e in range(epochs + 1)]
    # The resumed run published the model it finished, trained for every epoch.
    versions = registry.versions("two_tower", "acme")
    assert len(versions) == 2 and versions[-1].config["run"] == run.name
