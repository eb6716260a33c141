"""The Serve application: the whole deployment graph, wired in one place.

``configs/serve.yaml`` names :func:`build_app` as its ``import_path``; Serve validates the
``args:`` block against :class:`deployments.settings.AppArgs` and calls it. Replica counts,
resources, batching and polling are set per deployment in that file, not here.

    client ─► Ingress ─┬─► TwoTowerRetriever    (query tower + ANN index, hot-swapped)
      (user state,     ├─► Ranker               (@serve.batch, CPU or GPU, hot-swapped)
       other sources,  └─► DecisionLog          (async, bounded, batched; recent records)
       rules, slate)
                       [UserState, CandidateSources: own deployments with
                        ``placement: {user_state: deployment, sources: deployment}``]
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
    return Ingress.bind(
        ctx,
        args,
        UserStateDeployment.bind(ctx) if placement.user_state == "deployment" else None,
        TwoTowerRetrieverDeployment.bind(ctx),
        CandidateSourcesDeployment.bind(ctx, args.faults)
        if placement.sources == "deployment"
        else None,
        RankerDeployment.bind(ctx, args.faults),
        DecisionLogDeployment.bind(ctx.decisions, args.decision_queue_size, args.decision_lru_size),
    )
