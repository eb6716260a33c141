"""KubeRay manifests rendered from the project's own configs, so they cannot drift from them.

:func:`render_rayservice` turns ``configs/serve.yaml`` into a KubeRay ``RayService``: the Serve
config goes in ``serveConfigV2`` unchanged except for the listening host (``0.0.0.0`` inside a
pod) and ``args.home`` (the image's project root), and the Ray cluster gets a head group and
one CPU worker group (plus a GPU group when asked), every container running the project image
(``Dockerfile`` at the repository root) with the platform config and storage URIs in its
environment. Training jobs are submitted to the same cluster with
``ray job submit --address http://<head-svc>:8265 --working-dir . -- python -m training.<job>``.

    recsys k8s render --image registry.example.com/recsys:1.0 > rayservice.yaml
    kubectl apply -f rayservice.yaml

What cannot be checked on a laptop (a live Kubernetes cluster with the KubeRay operator) is
not claimed: the test checks the manifest's shape and that its Serve config passes Serve's own
schema.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

API_VERSION = "ray.io/v1"
PROJECT_ROOT_IN_IMAGE = "/app"


def _container(image: str, name: str, cpus: str, memory: str, gpus: int, env: dict[str, str],
               ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    limits: dict[str, Any] = {"cpu": cpus, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": {"limits": limits, "requests": dict(limits)},
    }
    if ports:
        out["ports"] = ports
    return out


def render_rayservice(
    serve_config: dict[str, Any],
    *,
    image: str,
    name: str = "recsys",
    namespace: str | None = None,
    platform_config: str = "configs/platform.yaml",
    storage_env: dict[str, str] | None = None,
    head_cpus: int = 2,
    worker_cpus: int = 4,
    worker_memory: str = "8Gi",
    min_workers: int = 1,
    max_workers: int = 4,
    gpu_workers: int = 0,
) -> dict[str, Any]:
    """A ``RayService`` manifest (a dict; :func:`dump` for YAML). ``storage_env`` adds
    environment variables to every container (e.g. object-store credentials or a
    ``RECSYS_CONFIG`` pointing at a platform config whose storage URIs are ``s3://…``)."""
    serve = copy.deepcopy(serve_config)
    serve.setdefault("http_options", {})["host"] = "0.0.0.0"
    serve["http_options"]["port"] = 8000
    serve["proxy_location"] = "EveryNode"
    for app in serve.get("applications", []):
        app.setdefault("args", {})["home"] = PROJECT_ROOT_IN_IMAGE
    # The applications' runtime_env reaches their replicas; the proxies and the controller
    # read the same Serve settings from the container environment.
    serve_env = {k: str(v) for app in serve.get("applications", [])
                 for k, v in (app.get("runtime_env") or {}).get("env_vars", {}).items()}  # fmt: skip
    env = {"RECSYS_HOME": PROJECT_ROOT_IN_IMAGE, "RECSYS_CONFIG": platform_config, **serve_env,
           **(storage_env or {})}  # fmt: skip
    head_ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}, {"containerPort": 8000, "name": "serve"}]  # fmt: skip
    workers = [{
        "groupName": "cpu",
        "replicas": min_workers, "minReplicas": min_workers, "maxReplicas": max_workers,
        "rayStartParams": {},
        "template": {"spec": {"containers": [
            _container(image, "ray-worker", str(worker_cpus), worker_memory, 0, env)]}},
    }]  # fmt: skip
    if gpu_workers:
        workers.append({
            "groupName": "gpu",
            "replicas": gpu_workers, "minReplicas": 0, "maxReplicas": gpu_workers,
            "rayStartParams": {},
            "template": {"spec": {"containers": [
                _container(image, "ray-worker", str(worker_cpus), worker_memory, 1, env)]}},
        })  # fmt: skip
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "recsys"}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": metadata,
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve, sort_keys=False),
            "rayClusterConfig": {
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    # The head runs the Serve controller, proxy and dashboard, not replicas.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"spec": {"containers": [
                        _container(image, "ray-head", str(head_cpus), "8Gi", 0, env, head_ports)]}},
                },  # fmt: skip
                "workerGroupSpecs": workers,
            },
        },
    }


def dump(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)
