"""The Serve application: the whole deployment graph, wired in one place.

``configs/serve.yaml`` (CPU-only nodes) and ``configs/serve.gpu.yaml`` (GPU nodes) name
:func:`build_app` as their ``import_path``; Serve validates the ``args:`` block against
:class:`deployments.settings.AppArgs` and calls it. Replica counts, resources, batching and
polling are set per deployment in those files, not here. The graph below is the GPU file's;
the CPU-only file places both models in the Ingress replicas (no TwoTowerRetriever, no
Ranker).

    client ─► Ingress ─┬─► TwoTowerRetriever    (query tower + ANN index, hot-swapped)
      (user state,     ├─► Ranker               (@serve.batch, CPU or GPU, hot-swapped)
       other sources,  └─► DecisionLog          (async, bounded, batched; recent records;
       rules, slate)                             none where ``placement.decision_log`` is
                                                 ``ingress``: each replica writes the log)
                       [UserState, CandidateSources: own deployments where
                        ``placement`` puts user state or source kinds there;
                        no TwoTowerRetriever / Ranker where it puts the two-tower /
                        the ranker in the Ingress replicas]
"""

from __future__ import annotations

from ray.serve import Application

from deployments.decision_log import DecisionLogDeployment
from deployments.ingress import Ingress
from deployments.loaders import ServingContext
from deployments.ranker import RankerDeployment
from deployments.retriever import TwoTowerRetrieverDeployment
from deployments.settings import AppArgs
from deployments.sources import CandidateSourcesDeployment
from deployments.user_state import UserStateDeployment


def build_app(args: AppArgs | dict) -> Application:
    # Serve validates `args` into the annotated model only when it can resolve the annotation;
    # `serve deploy` / the REST API may hand over the raw dict, so validate here either way.
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args or {})
    ctx = ServingContext.from_args(args)  # resolves paths once, where the app is built
    placement = args.placement
    kinds = {s.kind for t in ctx.platform().tenants for surf in t.surfaces.values()
             for s in surf.sources}  # fmt: skip
    where = {placement.deployment_for(k) for k in kinds} - {None}
    handles = {
        "UserState": UserStateDeployment.bind(ctx) if placement.user_state == "deployment" else None,
        "TwoTowerRetriever": None if placement.two_tower_in_ingress else TwoTowerRetrieverDeployment.bind(ctx),
        "CandidateSources": CandidateSourcesDeployment.bind(ctx) if "CandidateSources" in where else None,
        "Ranker": None if placement.ranker == "ingress" else RankerDeployment.bind(ctx),
        "DecisionLog": None if placement.decision_log == "ingress" else DecisionLogDeployment.bind(
            ctx.decisions, args.decision_queue_size, args.decision_lru_size,
            lru_bytes=int(args.decision_lru_mb * 2**20)),
    }  # fmt: skip
    return Ingress.bind(ctx, args, handles)
