"""KubeRay manifests rendered from the project's own configs, so they cannot drift from them.

:func:`render_rayservice` turns a shipped Serve config into a KubeRay ``RayService``:
``configs/serve.yaml`` for CPU-only worker nodes (both models in the Ingress replicas), or
``configs/serve.gpu.yaml`` with ``--gpu-workers N`` (the Ranker on GPU replicas; a config that
reserves GPUs with no GPU group is refused: nothing could place it). The Serve config goes in
``serveConfigV2`` unchanged except for the listening host (``0.0.0.0`` inside a pod) and
``args.home`` (the image's project root), and the Ray cluster gets a head group and one CPU
worker group (plus a GPU group when asked), every container running the project image
(``Dockerfile`` at the repository root) with the platform config and storage URIs in its
environment. Training jobs are submitted to the same cluster with
``ray job submit --address http://<head-svc>:8265 --working-dir . -- python -m training.<job>``.

    recsys k8s render --image registry.example.com/recsys:1.0 > rayservice.yaml
    recsys k8s render configs/serve.gpu.yaml --gpu-workers 2 --image … > rayservice.yaml
    kubectl apply -f rayservice.yaml

Ray token authentication is on by default, as for ``recsys up`` (``cluster/local.py``): every
Ray container (head, workers, the nightly RayJob's submitter) gets ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN`` from the key ``auth_token`` of a Kubernetes Secret (default
``recsys-ray-auth``), created once per namespace and never rendered (a manifest is often
committed; the token must not be)::

    kubectl create secret generic recsys-ray-auth --from-literal=auth_token="$(openssl rand -hex 32)"

The pods wait (``CreateContainerConfigError``) until the Secret exists. ``auth_secret=None``
(``--no-auth``) renders ``RAY_AUTH_MODE=disabled`` explicitly. Serve's HTTP port is not behind
this token (Ray's token guards the dashboard, job API, GCS and workers); the API's own keys
guard it.

What cannot be checked on a laptop (a live Kubernetes cluster with the KubeRay operator) is
not claimed: the test checks the manifest's shape and that its Serve config passes Serve's own
schema.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from cluster.serve_files import applications, deployments, env_vars

API_VERSION = "ray.io/v1"
PROJECT_ROOT_IN_IMAGE = "/app"
AUTH_SECRET = "recsys-ray-auth"
"""The default name of the Secret that holds the Ray token (key :data:`AUTH_SECRET_KEY`)."""
AUTH_SECRET_KEY = "auth_token"


def auth_env(auth_secret: str | None) -> list[dict[str, Any]]:
    """The container environment of Ray's token authentication: the mode, and the token read
    from ``auth_secret`` (a Secret's ``auth_token`` key); ``disabled`` when None."""
    if auth_secret is None:
        return [{"name": "RAY_AUTH_MODE", "value": "disabled"}]
    return [{"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN",
             "valueFrom": {"secretKeyRef": {"name": auth_secret, "key": AUTH_SECRET_KEY}}}]  # fmt: skip


def _container(image: str, name: str, cpus: str, memory: str, gpus: int, env: dict[str, str],
               ports: list[dict[str, Any]] | None = None, auth_secret: str | None = None) -> dict[str, Any]:  # fmt: skip
    limits: dict[str, Any] = {"cpu": cpus, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())] + auth_env(auth_secret),
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
    auth_secret: str | None = AUTH_SECRET,
) -> dict[str, Any]:
    """A ``RayService`` manifest (a dict; :func:`dump` for YAML). ``storage_env`` adds
    environment variables to every container (e.g. object-store credentials or a
    ``RECSYS_CONFIG`` pointing at a platform config whose storage URIs are ``s3://…``);
    ``auth_secret``: the Secret holding the Ray token (None: token authentication off)."""
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        if key in (storage_env or {}):
            raise ValueError(f"{key} is set by the manifest (auth_secret), not by the environment")
    on_gpu = [d["name"] for d in deployments(serve_config) if (d.get("ray_actor_options") or {}).get("num_gpus")]
    if on_gpu and not gpu_workers:
        raise ValueError(f"the serve config puts {', '.join(on_gpu)} on a GPU and there is no GPU "
                         "worker group: give gpu_workers (--gpu-workers N), or render configs/serve.yaml "
                         "(the CPU-only shape)")  # fmt: skip
    serve = copy.deepcopy(serve_config)
    serve.setdefault("http_options", {})["host"] = "0.0.0.0"
    serve["http_options"]["port"] = 8000
    serve["proxy_location"] = "EveryNode"
    for app in applications(serve):
        app.setdefault("args", {})["home"] = PROJECT_ROOT_IN_IMAGE
    # The applications' runtime_env reaches their replicas; the proxies and the controller
    # read the same Serve settings from the container environment.
    serve_env = env_vars(serve)
    env = {"RECSYS_HOME": PROJECT_ROOT_IN_IMAGE, "RECSYS_CONFIG": platform_config, **serve_env,
           **(storage_env or {})}  # fmt: skip
    head_ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}, {"containerPort": 8000, "name": "serve"}]  # fmt: skip
    workers = [{
        "groupName": "cpu",
        "replicas": min_workers, "minReplicas": min_workers, "maxReplicas": max_workers,
        "rayStartParams": {},
        "template": {"spec": {"containers": [
            _container(image, "ray-worker", str(worker_cpus), worker_memory, 0, env,
                       auth_secret=auth_secret)]}},
    }]  # fmt: skip
    if gpu_workers:
        workers.append({
            "groupName": "gpu",
            "replicas": gpu_workers, "minReplicas": 0, "maxReplicas": gpu_workers,
            "rayStartParams": {},
            "template": {"spec": {"containers": [
                _container(image, "ray-worker", str(worker_cpus), worker_memory, 1, env,
                           auth_secret=auth_secret)]}},
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
                        _container(image, "ray-head", str(head_cpus), "8Gi", 0, env, head_ports,
                                   auth_secret=auth_secret)]}},
                },  # fmt: skip
                "workerGroupSpecs": workers,
            },
        },
    }


def dump(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)


# ---------------------------------------------------------------------------------- nightly

TRAINING_STEPS: tuple[tuple[str, str], ...] = (
    ("training.quality_gate", "configs/train/quality_gate.yaml"),
    ("training.two_tower", "configs/train/two_tower.yaml"),
    ("training.build_index", "configs/train/build_index.yaml"),
    ("training.ranker", "configs/train/ranker.yaml"),
    ("training.review", "configs/train/pipeline.yaml"),
)
"""The nightly chain per tenant, in order; a step runs only when the one before succeeded (the
gate refuses bad data, so nothing trains on it; the review records its automatic checks and
leaves promotion to people)."""
SERVING_DATA_STEPS: tuple[tuple[str, str], ...] = (
    ("training.batch_score", "configs/train/batch_score.yaml"),
    ("training.fallback_lists", "configs/train/fallback_lists.yaml"),
)
"""Run after the chain whatever its outcome: they read the *production* versions, which a failed
or unreviewed training run does not change."""


def nightly_commands(tenants: list[str], python: str = "python") -> list[list[str]]:
    """Per tenant, the commands of each phase: ``[[chain...], [after...]]`` flattened in order
    (chain of tenant 1, after of tenant 1, chain of tenant 2, ...), each exactly what
    ``ray job submit`` / ``recsys train`` runs (:func:`cluster.commands.train_cmd.job_command`)."""
    from cluster.commands.train_cmd import job_command

    out = []
    for tenant in tenants:
        for steps in (TRAINING_STEPS, SERVING_DATA_STEPS):
            out.append([job_command(m, ["--config", c, "--tenant", tenant], python) for m, c in steps])
    return out


def nightly_entrypoint(tenants: list[str], python: str = "python") -> str:
    """One shell line (Ray runs a job's entrypoint with a shell): each phase's commands joined
    by ``&&``; the exit status is 1 when any phase failed, so the RayJob reports it."""
    phases = [f"{{ {' && '.join(cmds)}; }} || rc=1" for cmds in nightly_commands(tenants, python)]
    return "; ".join(["rc=0", *phases, "exit $rc"])


def render_nightly(
    *,
    image: str,
    tenants: list[str],
    name: str = "recsys-nightly",
    namespace: str | None = None,
    schedule: str = "0 2 * * *",
    platform_config: str = "configs/platform.yaml",
    storage_env: dict[str, str] | None = None,
    worker_cpus: int = 4,
    worker_memory: str = "8Gi",
    workers: int = 1,
    kubectl_image: str = "bitnami/kubectl:1.31",
    auth_secret: str | None = AUTH_SECRET,
) -> list[dict[str, Any]]:
    """The nightly pipeline as Kubernetes objects: a KubeRay ``RayJob`` (its own Ray cluster,
    torn down when the job ends) kept in a ``ConfigMap``, and a ``CronJob`` whose pod creates
    one RayJob from it per run (``kubectl create``: a ``generateName`` gives each run its own
    object), with the ``ServiceAccount``/``Role``/``RoleBinding`` that allows exactly that.
    The jobs write to the storage URIs of the platform config, as the serving cluster reads
    them; ``storage_env`` and ``auth_secret`` as for :func:`render_rayservice` (the RayJob's
    submitter pod, which runs ``ray job submit``, gets the token too)."""
    env = {"RECSYS_HOME": PROJECT_ROOT_IN_IMAGE, "RECSYS_CONFIG": platform_config, **(storage_env or {})}
    labels = {"app.kubernetes.io/name": "recsys", "app.kubernetes.io/component": "nightly"}

    def meta(obj_name: str, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"name": obj_name, "labels": dict(labels), **extra}
        if namespace:
            out["namespace"] = namespace
        return out

    rayjob_meta = meta(name)
    rayjob_meta["generateName"] = rayjob_meta.pop("name") + "-"
    rayjob = {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": rayjob_meta,
        "spec": {
            "entrypoint": nightly_entrypoint(tenants),
            "runtimeEnvYAML": yaml.safe_dump({"working_dir": PROJECT_ROOT_IN_IMAGE, "env_vars": env}),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 86_400,
            "activeDeadlineSeconds": 6 * 3600,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": {
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {"spec": {"containers": [
                        _container(image, "ray-head", "2", "8Gi", 0, env,
                                   [{"containerPort": 8265, "name": "dashboard"}], auth_secret)]}},
                },  # fmt: skip
                "workerGroupSpecs": [{
                    "groupName": "cpu", "replicas": workers, "minReplicas": workers, "maxReplicas": workers,
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [
                        _container(image, "ray-worker", str(worker_cpus), worker_memory, 0, env,
                                   auth_secret=auth_secret)]}},
                }],  # fmt: skip
            },
            # The submitter (a Kubernetes Job running `ray job submit`; KubeRay fills in its
            # command and the dashboard address) needs the token as well.
            "submitterPodTemplate": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "ray-job-submitter", "image": image, "env": auth_env(auth_secret),
                 "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                               "requests": {"cpu": "1", "memory": "1Gi"}}}]}},
        },
    }
    account = f"{name}-submitter"
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta(name),
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",  # one nightly run at a time
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {"backoffLimit": 2, "template": {"metadata": {"labels": dict(labels)}, "spec": {
                "serviceAccountName": account,
                "restartPolicy": "OnFailure",
                "containers": [{
                    "name": "submit-rayjob",
                    "image": kubectl_image,
                    "command": ["kubectl", "create", "-f", "/rayjob/rayjob.yaml"],
                    "volumeMounts": [{"name": "rayjob", "mountPath": "/rayjob", "readOnly": True}],
                }],
                "volumes": [{"name": "rayjob", "configMap": {"name": f"{name}-rayjob"}}],
            }}}},  # fmt: skip
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{name}-rayjob"),
         "data": {"rayjob.yaml": yaml.safe_dump(rayjob, sort_keys=False)}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(account)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(account),
         "rules": [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(account),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, **({"namespace": namespace} if namespace else {})}]},
        cron,
    ]  # fmt: skip


def dump_all(manifests: list[dict[str, Any]]) -> str:
    """Several objects as one multi-document YAML stream (``kubectl apply -f`` takes it)."""
    return yaml.safe_dump_all(manifests, sort_keys=False)
