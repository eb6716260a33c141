#!/bin/bash
# Serve graph shapes side by side, one bench_serving --serve-only run each, in a row (same
# artifacts, same rates): A the GPU shape (configs/serve.gpu.yaml: one Ingress, TwoTowerRetriever
# and Ranker deployments; no GPU reserved where there is none), B both models in two Ingress
# replicas (configs/serve.yaml as shipped), C two Ingress replicas with the model deployments;
# D both models in one Ingress.
#   benchmarks/placement_sweep.sh OUT_DIR [RATES=30,50,75,100] [SECONDS=10] [ARTIFACTS=var/bench-art]
#   SHAPES="A_gpu_shape B_shipped" benchmarks/placement_sweep.sh /tmp/place
# Writes OUT_DIR/<shape>.json (bench_serving's JSON) and prints one line per rate.
set -euo pipefail
out=${1:?out dir}; rates=${2:-30,50,75,100}; secs=${3:-10}; art=${4:-var/bench-art}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
declare -A shapes=(
  [A_gpu_shape]="--config configs/serve.gpu.yaml"
  [B_shipped]=""
  [C_ingress_x2]="--config configs/serve.gpu.yaml --ingress-replicas 2"
  [D_models_in_ingress_x1]="--ingress-replicas 1"
)
for name in ${SHAPES:-A_gpu_shape B_shipped C_ingress_x2}; do
  echo "== $name $(date -u +%H:%M:%S) $(uptime | sed 's/.*load/load/')"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $py -m benchmarks.bench_serving --serve-only --artifacts "$art" \
     --rates "$rates" --seconds "$secs" ${shapes[$name]} --out "$out/$name.json" > "$out/$name.log" 2>&1
  $py - "$out/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r["serve"]:
    cpu = s.get("cpu_ms_per_request", {})
    print(f"  {s['target_rps']:>5} req/s achieved {s['achieved_rps']} p50 {s['p50_ms']} p99 {s['p99_ms']} "
          f"errors {s['errors']} cpu {cpu.get('total')} (Ingress {cpu.get('Ingress')}, Ranker {cpu.get('Ranker')}, "
          f"TT {cpu.get('TwoTowerRetriever')}) load {[round(x, 1) for x in s['load_average']]}")
PY
done
