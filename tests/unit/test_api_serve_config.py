"""The two shipped Serve configs are valid Ray Serve configs whose args and user_configs fit our
models: ``configs/serve.yaml`` for CPU-only nodes (both models in the Ingress replicas),
``configs/serve.gpu.yaml`` for GPU nodes (the model deployments, the Ranker on a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.commands.serve_cmd import prepare_config, scaled_config
from cluster.serve_files import (
    SERVE_CPU,
    SERVE_GPU,
    config_model_homes,
    replica_counts,
    without_gpus,
)
from deployments.settings import AppArgs, RankerUserConfig, WatchUserConfig

SHIPPED = {"cpu": SERVE_CPU, "gpu": SERVE_GPU}
USER_CONFIGS = {"Ranker": RankerUserConfig, "TwoTowerRetriever": WatchUserConfig,
                "CandidateSources": WatchUserConfig}  # fmt: skip
# User state and the non-model sources run in the Ingress (args.placement, the default); each
# model runs in its own deployment unless args.placement puts it in the Ingress too.
MODEL_DEPLOYMENTS = {"TwoTowerRetriever": "two_tower", "Ranker": "ranker"}


def _config(node: str = "cpu") -> dict:
    return yaml.safe_load(SHIPPED[node].read_text())


def _deployments(config: dict) -> dict[str, dict]:
    (app,) = config["applications"]
    return {d["name"]: d for d in app["deployments"]}


@pytest.mark.parametrize("node", SHIPPED)
def test_serve_yaml_validates_with_serves_own_schema(node):
    schema = ServeDeploySchema.model_validate(_config(node))
    (app,) = schema.applications
    assert app.import_path == "deployments.app:build_app"
    placement = AppArgs.model_validate(app.args).placement
    where = {"two_tower": placement.source_kinds["two_tower"], "ranker": placement.ranker}
    graph = {"Ingress"} | {name for name, model in MODEL_DEPLOYMENTS.items()
                           if where[model] == "deployment"}  # fmt: skip
    if placement.decision_log == "deployment":
        graph.add("DecisionLog")
    assert {d.name for d in app.deployments} == graph


def test_each_file_has_the_shape_of_its_node():
    """CPU-only: both models inside two Ingress replicas (the shape measured best on two cores),
    each replica checking its alias; GPU: the model deployments, the Ranker on a GPU with CUDA."""
    cpu, gpu = _config("cpu"), _config("gpu")
    assert config_model_homes(cpu) == {"two_tower": "ingress", "ranker": "ingress"}
    assert replica_counts(cpu["applications"][0])["Ingress"] == 2
    assert "model_poll_interval_s" in cpu["applications"][0]["args"]
    assert not any(d["ray_actor_options"].get("num_gpus") for d in _deployments(cpu).values())
    assert config_model_homes(gpu) == {"two_tower": "deployment", "ranker": "deployment"}
    ranker = _deployments(gpu)["Ranker"]
    assert ranker["ray_actor_options"]["num_gpus"] == 1 and ranker["user_config"]["device"] == "cuda"
    # Runnable on a CPU-only machine (tests, benchmarks) without touching the file's dict.
    on_cpu = _deployments(without_gpus(gpu))["Ranker"]
    assert on_cpu["ray_actor_options"]["num_gpus"] == 0 and on_cpu["user_config"]["device"] == "cpu"
    assert ranker["ray_actor_options"]["num_gpus"] == 1
    # Everything but the models' home and what goes with it is the same in both files.
    same = ("proxy_location", "http_options", "tracing_config")
    assert {k: cpu[k] for k in same} == {k: gpu[k] for k in same}
    (c,), (g,) = cpu["applications"], gpu["applications"]
    assert c["runtime_env"] == g["runtime_env"] and c["logging_config"] == g["logging_config"]
    # Decision records written by the Ingress replicas in both (no DecisionLog deployment: it
    # cost ~1 ms of CPU per request on two cores, docs/performance.md).
    for node in (cpu, gpu):
        assert AppArgs.model_validate(node["applications"][0]["args"]).placement.decision_log == "ingress"
        assert "DecisionLog" not in _deployments(node)


def test_the_clusters_environment_carries_the_serve_fast_paths():
    """What the Serve controller and proxy read at start-up comes from serve.yaml (the same in
    serve.gpu.yaml), and each cluster gets its own HAProxy stats and metrics ports."""
    from cluster.local import serve_env

    (app,) = _config()["applications"]
    env = serve_env(SERVE_CPU)
    assert app["runtime_env"]["env_vars"].items() <= env.items()
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    ports = env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]
    assert all(p.isdigit() for p in ports) and ports[0] != ports[1]


def test_the_idle_levers_reach_the_daemons_and_only_slow_background_periods():
    """The idle-CPU levers (issue #13) travel in the same env list as the Serve fast paths, so
    `recsys up`, the benchmarks and the KubeRay render give them to the raylet and the log
    monitor; each lengthens a period and none turns a feature off (0 disables these timers)."""
    from cluster.local import serve_env

    env = serve_env(SERVE_CPU)
    assert env["RAY_LOG_MONITOR_MANY_FILES_THRESHOLD"] == "0"  # re-list log files every 0.5 s
    raylet_defaults = {"RAY_object_manager_timer_freq_ms": 100, "RAY_raylet_report_resources_period_milliseconds": 100,
                       "RAY_raylet_check_gc_period_milliseconds": 100, "RAY_kill_idle_workers_interval_ms": 200}  # fmt: skip
    for name, default in raylet_defaults.items():
        assert default < int(env[name]) <= 1000, name
    # They share one wake-up of the raylet: all of them or none saves it.
    assert len({env[name] for name in raylet_defaults}) == 1
    assert int(env["REPORTER_UPDATE_INTERVAL_MS"]) > 5000  # the dashboard agent's stats (default 5 s)
    assert 0.1 < float(env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"]) <= 1.0  # Serve's control loop (default 0.1 s)


@pytest.mark.parametrize("node", SHIPPED)
def test_args_and_user_configs_validate_with_our_models(node):
    (app,) = _config(node)["applications"]
    args = AppArgs.model_validate(app["args"])
    assert Path(args.resolve(args.platform_config)).is_file()
    assert args.placement.user_state == args.placement.sources == "ingress"
    for dep in app["deployments"]:
        if "user_config" in dep:
            USER_CONFIGS[dep["name"]].model_validate(dep["user_config"])


def test_cpu_graph_fits_the_two_core_default_machine():
    """Every replica of the CPU-only file schedules on `--num-cpus 2` (make demo, the
    benchmarks) with room left for the processes that reserve no CPU (the Serve controller,
    HAProxy, the decision log's writer thread)."""
    (app,) = _config("cpu")["applications"]
    replicas = replica_counts(app)
    cpus = sum(replicas[d["name"]] * d["ray_actor_options"]["num_cpus"] for d in app["deployments"])
    assert cpus <= 1.6


def test_deploy_pins_home_and_port_without_touching_the_file_dict():
    config = _config()
    out = prepare_config(config, "/srv/recsys", http_port=18000)
    assert out["applications"][0]["args"]["home"] == "/srv/recsys"
    assert out["http_options"]["port"] == 18000
    assert "home" not in config["applications"][0]["args"]
    ServeDeploySchema.model_validate(out)


@pytest.mark.parametrize(("node", "name"), [("cpu", "Ingress"), ("gpu", "Ranker")])
def test_scale_changes_one_deployment_only(node, name):
    """`recsys scale` on each file's unit of scale: the Ingress holding the models (CPU-only),
    the autoscaled Ranker (GPU: its autoscaling gives way to the fixed count)."""
    (app,) = _config(node)["applications"]
    details = {"http_options": {"host": "127.0.0.1", "port": 8000},
               "applications": {"recsys": {"deployed_app_config": app}}}  # fmt: skip
    out = scaled_config(details, name, 3, None)
    deps = {d["name"]: d for d in out["applications"][0]["deployments"]}
    assert deps[name]["num_replicas"] == 3 and "autoscaling_config" not in deps[name]
    shipped = _deployments(_config(node))  # a fresh copy: scaled_config edits what it is given
    assert {k: v for k, v in deps.items() if k != name} == {k: v for k, v in shipped.items() if k != name}
    ServeDeploySchema.model_validate(out)
