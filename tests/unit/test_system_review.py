"""The launch review's whole-pipeline checks: what the served slate loses against production
and against the retriever's own order decides, whatever the model's own metrics say."""

from core.train_config import SystemReviewConfig
from training.system_review import system_checks


def _stages(final: dict, retriever: dict) -> dict:
    return {"retriever": retriever, "final_slate": final}


RETRIEVER = {"expected_ctr@10": 0.16, "ndcg@10": 0.14}


def test_a_slate_that_loses_clicks_against_the_retriever_is_refused():
    # Today's shape: the ranker and slate policy cost 28% of the retriever's clicks.
    checks = system_checks(_stages({"expected_ctr@10": 0.116, "ndcg@10": 0.026}, RETRIEVER), None, SystemReviewConfig())
    assert not checks["system_vs_retriever"]["ok"]
    assert "expected_ctr@10 0.1160 vs retriever 0.1600" in checks["system_vs_retriever"]["detail"]
    assert checks["system_vs_production"]["ok"]  # nothing in production to lose against


def test_a_slate_that_beats_the_retriever_within_its_ndcg_budget_passes():
    checks = system_checks(_stages({"expected_ctr@10": 0.19, "ndcg@10": 0.12}, RETRIEVER), None, SystemReviewConfig())
    assert all(c["ok"] for c in checks.values()), checks
    assert {c["item"] for c in checks.values()} == {"offline_metrics"}


def test_losing_against_production_beyond_the_tolerance_is_refused():
    prod = _stages({"expected_ctr@10": 0.20, "ndcg@10": 0.12}, RETRIEVER)
    cand = _stages({"expected_ctr@10": 0.19, "ndcg@10": 0.12}, RETRIEVER)
    checks = system_checks(cand, prod, SystemReviewConfig(tolerance=0.02))
    assert not checks["system_vs_production"]["ok"]
    assert "expected_ctr@10 0.1900 < production 0.2000" in checks["system_vs_production"]["detail"]
    assert system_checks(cand, prod, SystemReviewConfig(tolerance=0.1))["system_vs_production"]["ok"]


def test_without_a_click_model_only_ndcg_is_compared_and_the_review_says_so():
    stages = _stages({"ndcg@10": 0.12}, {"ndcg@10": 0.14})
    checks = system_checks(stages, None, SystemReviewConfig())
    assert checks["system_vs_retriever"]["ok"]  # within the 25% NDCG budget
    assert "no click model" in checks["system_vs_production"]["detail"]
    strict = SystemReviewConfig(retriever_budget={"ndcg@10": 0.0})
    assert not system_checks(stages, None, strict)["system_vs_retriever"]["ok"]


def test_a_first_launch_whose_ranker_loses_to_the_retriever_refuses_the_ranker_not_the_two_tower():
    # make demo on `tiny`: toy models, the ranker's slate far below the retriever's own order.
    from training.system_review import checks_by_kind

    losing = _stages({"expected_ctr@10": 0.0305, "ndcg@10": 0.02}, {"expected_ctr@10": 0.0656, "ndcg@10": 0.03})
    by_kind = checks_by_kind({"two_tower", "ranker"}, losing, None, None, SystemReviewConfig())
    assert not by_kind["ranker"]["system_vs_retriever"]["ok"]
    assert set(by_kind["two_tower"]) == {"system_vs_production"}  # the retriever floor is not its check
    assert by_kind["two_tower"]["system_vs_production"]["ok"]  # nothing in production to lose against


def test_a_two_tower_answers_for_its_slate_with_productions_ranker_not_for_the_new_rankers():
    from training.system_review import checks_by_kind

    prod = _stages({"expected_ctr@10": 0.20, "ndcg@10": 0.12}, RETRIEVER)
    with_new_ranker = _stages({"expected_ctr@10": 0.15, "ndcg@10": 0.12}, RETRIEVER)  # the new ranker loses
    with_prod_ranker = _stages({"expected_ctr@10": 0.21, "ndcg@10": 0.12}, RETRIEVER)  # the new two-tower gains
    by_kind = checks_by_kind({"two_tower", "ranker"}, with_new_ranker, prod, with_prod_ranker, SystemReviewConfig())
    assert not by_kind["ranker"]["system_vs_production"]["ok"]
    assert by_kind["two_tower"]["system_vs_production"]["ok"]
    # and a two-tower that loses with production's ranker is refused whatever the new ranker does
    worse = _stages({"expected_ctr@10": 0.15, "ndcg@10": 0.12}, RETRIEVER)
    by_kind = checks_by_kind({"two_tower", "ranker"}, prod, prod, worse, SystemReviewConfig())
    assert not by_kind["two_tower"]["system_vs_production"]["ok"]
    assert by_kind["ranker"]["system_vs_production"]["ok"]
    # only the kinds under review get checks
    assert set(checks_by_kind({"ranker"}, prod, prod, None, SystemReviewConfig())) == {"ranker"}
