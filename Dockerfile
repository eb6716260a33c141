# The project image for a Ray cluster on Kubernetes (KubeRay head and workers run it; see
# cluster/kuberay.py and `recsys k8s render`). CPU torch by default; for GPU worker groups build
# with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 RECSYS_HOME=/app PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY retrieval retrieval
COPY ranking ranking
COPY training training
COPY deployments deployments
COPY cluster cluster
COPY configs configs
COPY benchmarks benchmarks
COPY docs docs
RUN pip install --extra-index-url "$TORCH_INDEX" . \
    && python -c "import ray, torch, scann, deployments.app"
EXPOSE 8000 8265 6379 10001
