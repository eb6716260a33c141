"""The KubeRay RayService rendered from configs/serve.yaml: shape, and a Serve config that
Serve's own schema accepts (a live Kubernetes cluster is not available to the tests)."""

from __future__ import annotations

import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.cli import main
from cluster.kuberay import render_rayservice


def _serve_config() -> dict:
    return yaml.safe_load(open("configs/serve.yaml"))


def test_rayservice_embeds_the_serve_config_for_a_pod():
    original = _serve_config()
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
    env = {e["name"]: e["value"] for e in head["env"]}
    assert env["RECSYS_HOME"] == "/app" and env["AWS_REGION"] == "x"
    assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"  # from serve.yaml
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1 and "nvidia.com/gpu" not in str(groups["cpu"])


def test_cli_renders_yaml_and_names_a_bad_env(capsys):
    assert main(["k8s", "render", "--image", "reg/recsys:1", "--namespace", "ml"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["metadata"]["namespace"] == "ml"
    assert main(["k8s", "render", "--image", "i", "--env", "NOEQUALS"]) == 2
    assert "NOEQUALS" in capsys.readouterr().err
