"""configs/serve.yaml is a valid Ray Serve config whose args and user_configs fit our models."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.commands.serve_cmd import prepare_config, scaled_config
from deployments.settings import AppArgs, RankerUserConfig, WatchUserConfig

SERVE_YAML = Path("configs/serve.yaml")
USER_CONFIGS = {"Ranker": RankerUserConfig, "TwoTowerRetriever": WatchUserConfig,
                "CandidateSources": WatchUserConfig}  # fmt: skip
# User state and the non-model sources run in the Ingress (args.placement, the default); each
# model runs in its own deployment unless args.placement puts it in the Ingress too.
MODEL_DEPLOYMENTS = {"TwoTowerRetriever": "two_tower", "Ranker": "ranker"}


def _config() -> dict:
    return yaml.safe_load(SERVE_YAML.read_text())


def test_serve_yaml_validates_with_serves_own_schema():
    schema = ServeDeploySchema.model_validate(_config())
    (app,) = schema.applications
    assert app.import_path == "deployments.app:build_app"
    placement = AppArgs.model_validate(app.args).placement
    where = {"two_tower": placement.source_kinds["two_tower"], "ranker": placement.ranker}
    graph = {"Ingress", "DecisionLog"} | {name for name, model in MODEL_DEPLOYMENTS.items()
                                         if where[model] == "deployment"}  # fmt: skip
    assert {d.name for d in app.deployments} == graph


def test_the_clusters_environment_carries_the_serve_fast_paths():
    """What the Serve controller and proxy read at start-up comes from serve.yaml, and each
    cluster gets its own HAProxy stats and metrics ports (clusters side by side)."""
    from cluster.local import serve_env

    (app,) = _config()["applications"]
    env = serve_env(SERVE_YAML)
    assert app["runtime_env"]["env_vars"].items() <= env.items()
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    ports = env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]
    assert all(p.isdigit() for p in ports) and ports[0] != ports[1]


def test_args_and_user_configs_validate_with_our_models():
    (app,) = _config()["applications"]
    args = AppArgs.model_validate(app["args"])
    assert Path(args.resolve(args.platform_config)).is_file()
    assert args.placement.user_state == args.placement.sources == "ingress"
    for dep in app["deployments"]:
        if "user_config" in dep:
            USER_CONFIGS[dep["name"]].model_validate(dep["user_config"])


def test_graph_fits_the_two_core_default_machine():
    (app,) = _config()["applications"]
    cpus = 0.0
    for dep in app["deployments"]:
        n = dep.get("num_replicas") or dep["autoscaling_config"]["min_replicas"]
        cpus += n * dep["ray_actor_options"]["num_cpus"]
    assert cpus <= 1.6


def test_deploy_pins_home_and_port_without_touching_the_file_dict():
    config = _config()
    out = prepare_config(config, "/srv/recsys", http_port=18000)
    assert out["applications"][0]["args"]["home"] == "/srv/recsys"
    assert out["http_options"]["port"] == 18000
    assert "home" not in config["applications"][0]["args"]
    ServeDeploySchema.model_validate(out)


def test_scale_changes_one_deployment_only():
    (app,) = _config()["applications"]
    details = {"http_options": {"host": "127.0.0.1", "port": 8000},
               "applications": {"recsys": {"deployed_app_config": app}}}  # fmt: skip
    out = scaled_config(details, "Ranker", 3, None)
    deps = {d["name"]: d for d in out["applications"][0]["deployments"]}
    assert deps["Ranker"]["num_replicas"] == 3 and "autoscaling_config" not in deps["Ranker"]
    assert deps["Ingress"] == next(d for d in app["deployments"] if d["name"] == "Ingress")
    ServeDeploySchema.model_validate(out)
