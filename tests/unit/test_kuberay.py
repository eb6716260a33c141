"""The KubeRay RayService rendered from the shipped Serve configs (configs/serve.yaml for CPU-only
workers, configs/serve.gpu.yaml for a GPU group): shape, and a Serve config that Serve's own
schema accepts (a live Kubernetes cluster is not available to the tests)."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.cli import main
from cluster.kuberay import render_rayservice


def _serve_config(path: str = "configs/serve.yaml") -> dict:
    return yaml.safe_load(open(path))


@pytest.mark.parametrize("path", ["configs/serve.yaml", "configs/serve.gpu.yaml"])
def test_rayservice_embeds_the_serve_config_for_a_pod(path):
    original = _serve_config(path)
    m = render_rayservice(original, image="reg/recsys:1", gpu_workers=1, storage_env={"AWS_REGION": "x"})
    assert m["apiVersion"] == "ray.io/v1" and m["kind"] == "RayService"
    serve = yaml.safe_load(m["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    assert serve["http_options"]["host"] == "0.0.0.0"
    (app,) = serve["applications"]
    assert app["args"]["home"] == "/app" and app["import_path"] == "deployments.app:build_app"
    assert [d["name"] for d in app["deployments"]] == [
        d["name"] for d in original["applications"][0]["deployments"]
    ]
    assert "home" not in original["applications"][0]["args"]  # the input is not modified
    cluster = m["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "reg/recsys:1"
    env = {e["name"]: e.get("value") for e in head["env"]}
    assert env["RECSYS_HOME"] == "/app" and env["AWS_REGION"] == "x"
    assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"  # from serve.yaml
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1 and "nvidia.com/gpu" not in str(groups["cpu"])
    assert [d.get("ray_actor_options") for d in app["deployments"]] == [
        d.get("ray_actor_options") for d in original["applications"][0]["deployments"]
    ]  # the Ranker keeps its GPU in the GPU file, nothing asks for one in the CPU file


def test_a_gpu_config_needs_a_gpu_group(capsys):
    """The GPU shape without a GPU worker group could never place its Ranker: refused, in one
    line from the CLI; the CPU-only shape renders without one."""
    with pytest.raises(ValueError, match="puts Ranker on a GPU"):
        render_rayservice(_serve_config("configs/serve.gpu.yaml"), image="reg/recsys:1")
    assert main(["k8s", "render", "configs/serve.gpu.yaml", "--image", "i", "--no-nightly"]) == 2
    assert "--gpu-workers" in capsys.readouterr().err
    manifest = render_rayservice(_serve_config(), image="reg/recsys:1")
    assert [g["groupName"] for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]] == ["cpu"]


def test_cli_renders_yaml_and_names_a_bad_env(capsys):
    assert main(["k8s", "render", "--image", "reg/recsys:1", "--namespace", "ml"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[0]["kind"] == "RayService"
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}
    assert main(["k8s", "render", "--image", "reg/recsys:1", "--no-nightly"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kind"] == "RayService"
    assert main(["k8s", "render", "--image", "i", "--env", "NOEQUALS"]) == 2
    assert "NOEQUALS" in capsys.readouterr().err


DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_object(obj: dict) -> None:
    """What the Kubernetes API server requires of every object we render."""
    assert set(obj) >= {"apiVersion", "kind", "metadata"}
    name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "").rstrip("-")
    assert DNS_1123.match(name) and len(name) <= 63, name
    for key, value in obj["metadata"].get("labels", {}).items():
        assert len(value) <= 63 and re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value), key


def _containers(pod_spec: dict) -> list[dict]:
    for c in pod_spec["containers"]:
        assert DNS_1123.match(c["name"]) and c["image"]
    return pod_spec["containers"]


def test_nightly_rayjob_and_cronjob_run_the_jobs_api_commands(capsys):
    """`recsys k8s render` also renders the nightly pipeline: valid Kubernetes objects, and a
    RayJob whose entrypoint runs, in order, exactly the commands `ray job submit` (through
    `recsys train ... --address`) runs for each step."""
    from cluster.commands.train_cmd import job_command
    from cluster.kuberay import SERVING_DATA_STEPS, TRAINING_STEPS

    assert main(["k8s", "render", "--image", "reg/recsys:1", "--namespace", "ml", "--schedule", "30 1 * * *",
                 "--tenant", "acme", "--tenant", "globex", "--env", "AWS_REGION=eu"]) == 0  # fmt: skip
    docs = {d["kind"]: d for d in yaml.safe_load_all(capsys.readouterr().out)}
    assert set(docs) == {"RayService", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "CronJob"}
    for obj in docs.values():
        _check_object(obj)
    cron = docs["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and cron["spec"]["schedule"] == "30 1 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")  # what a Job's pod must have
    (submitter,) = _containers(pod)
    assert submitter["command"][:3] == ["kubectl", "create", "-f"]
    mount = submitter["volumeMounts"][0]
    assert submitter["command"][3] == f"{mount['mountPath']}/rayjob.yaml"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    # The pod's service account may create RayJobs, and nothing else.
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert docs["RoleBinding"]["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert docs["RoleBinding"]["subjects"][0]["name"] == pod["serviceAccountName"]
    assert docs["Role"]["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list"]}]

    rayjob = yaml.safe_load(docs["ConfigMap"]["data"]["rayjob.yaml"])
    _check_object(rayjob)
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["generateName"] == "recsys-nightly-"  # a new object each night
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "K8sJobMode"
    for group in (spec["rayClusterSpec"]["headGroupSpec"], *spec["rayClusterSpec"]["workerGroupSpecs"]):
        (container,) = _containers(group["template"]["spec"])
        assert container["image"] == "reg/recsys:1"
        assert {"name": "AWS_REGION", "value": "eu"} in container["env"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/app" and runtime_env["env_vars"]["RECSYS_HOME"] == "/app"

    # The entrypoint, as the shell Ray runs it with parses it: the same commands, in order.
    words = shlex.split(spec["entrypoint"].replace(";", " ; ").replace("{", " { ").replace("}", " } "))
    commands, current = [], []
    for w in words:
        if w in ("&&", ";", "{", "}", "||"):
            if current and current[0] == "python":
                commands.append(shlex.join(current))
            current = []
        else:
            current.append(w)
    expected = [job_command(module, ["--config", config, "--tenant", tenant])
                for tenant in ("acme", "globex") for module, config in (*TRAINING_STEPS, *SERVING_DATA_STEPS)]  # fmt: skip
    assert commands == expected
    for module, config in (*TRAINING_STEPS, *SERVING_DATA_STEPS):
        assert Path(config).is_file(), config  # every step's config ships in the image
        assert importlib.util.find_spec(module) is not None, module
    assert spec["entrypoint"].startswith("rc=0;") and spec["entrypoint"].endswith("exit $rc")


def test_nightly_entrypoint_stops_training_at_a_failed_step_but_still_scores(tmp_path):
    """The shell semantics of the entrypoint, run for real with stand-in commands: a failed
    quality gate skips training, batch scoring and fallback lists still run, the exit status
    says something failed."""
    from cluster.kuberay import nightly_entrypoint

    line = nightly_entrypoint(["acme"], python=str(tmp_path / "py"))
    log = tmp_path / "log"
    script = tmp_path / "py"
    script.write_text(f"#!/bin/sh\necho \"$2\" >> {log}\n[ \"$2\" != training.quality_gate ]\n")
    script.chmod(0o755)
    done = subprocess.run(["sh", "-c", line], check=False)
    assert done.returncode == 1
    assert log.read_text().split() == ["training.quality_gate", "training.batch_score", "training.fallback_lists"]


def _env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _ray_containers(docs: list[dict]) -> list[dict]:
    """Every container that talks to Ray: the RayService's head and workers, and the nightly
    RayJob's head, workers and submitter."""
    out = []
    for d in docs:
        if d["kind"] == "RayService":
            cluster = d["spec"]["rayClusterConfig"]
        elif d["kind"] == "ConfigMap":
            rayjob = yaml.safe_load(d["data"]["rayjob.yaml"])
            cluster = rayjob["spec"]["rayClusterSpec"]
            out += rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]
        else:
            continue
        for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
            out += group["template"]["spec"]["containers"]
    return out


def test_ray_token_auth_is_on_by_default_with_the_token_from_a_secret(capsys):
    """As `recsys up`: every Ray container runs with RAY_AUTH_MODE=token and the token from the
    Secret named by --auth-secret; the token itself never appears in the rendered output."""
    assert main(["k8s", "render", "--image", "reg/recsys:1", "--tenant", "acme", "--gpu-workers", "1"]) == 0
    out = capsys.readouterr().out
    containers = _ray_containers(list(yaml.safe_load_all(out)))
    assert len(containers) == 6  # service head, cpu and gpu workers; job head, worker, submitter
    for c in containers:
        env = _env_of(c)
        assert env["RAY_AUTH_MODE"] == "token", c["name"]
        assert env["RAY_AUTH_TOKEN"] == {"secretKeyRef": {"name": "recsys-ray-auth", "key": "auth_token"}}
    assert main(["k8s", "render", "--image", "i", "--no-nightly", "--auth-secret", "prod-ray-token"]) == 0
    (head,) = _ray_containers([yaml.safe_load(capsys.readouterr().out)])[:1]
    assert _env_of(head)["RAY_AUTH_TOKEN"]["secretKeyRef"]["name"] == "prod-ray-token"


def test_no_auth_is_explicit_and_auth_cannot_be_overridden_by_env(capsys):
    assert main(["k8s", "render", "--image", "i", "--tenant", "acme", "--no-auth"]) == 0
    for c in _ray_containers(list(yaml.safe_load_all(capsys.readouterr().out))):
        env = _env_of(c)
        assert env["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN" not in env
    assert main(["k8s", "render", "--image", "i", "--env", "RAY_AUTH_MODE=disabled"]) == 2
    assert "--auth-secret" in capsys.readouterr().err
    assert main(["k8s", "render", "--image", "i", "--no-auth", "--auth-secret", "s"]) == 2
    assert "choose one" in capsys.readouterr().err
