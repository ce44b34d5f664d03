"""What training reports to its progress: each step in order, counted steps from 1 to their total."""

from __future__ import annotations

from itertools import groupby

from recloop.core.settings import Settings
from recloop.learning.datasets import time_split
from recloop.learning.training import RankerHyperparameters, train_candidate
from recloop.models.bundle import ModelKind
from tests.support.learning import SMALL_MF, T0, tastes

SETTINGS = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})
HISTORY = tastes(40, T0, {"a": [f"a{n}" for n in range(6)], "b": [f"b{n}" for n in range(6)]})
TINY_RANKER = RankerHyperparameters(negatives_per_query=5, rounds=5, min_data_in_leaf=2)


class Recorder:
    def __init__(self) -> None:
        self.reports: list[tuple[str, int, int | None]] = []

    def __call__(self, step: str, done: int = 0, total: int | None = None) -> None:
        self.reports.append((step, done, total))

    def steps(self) -> list[tuple[str, int | None]]:
        """Each step once, in order, with its total; checks that a counted step went 1, 2, ... total."""
        found = []
        for step, reports in groupby(self.reports, key=lambda report: report[0]):
            counts = [(done, total) for _, done, total in reports]
            total = counts[0][1]
            if total is not None:
                assert counts == [(n, total) for n in range(1, total + 1)], (step, counts)
            found.append((step, total))
        return found


def test_an_mf_candidate_reports_its_sweeps_evaluation_and_refit() -> None:
    progress = Recorder()
    train_candidate(ModelKind.MF, HISTORY, SETTINGS, "mf-1", mf_params=SMALL_MF, progress=progress)
    holdout = len(time_split(HISTORY, 0.1)[1])
    assert progress.steps() == [
        ("mf candidate: MF sweeps", SMALL_MF.iterations),
        ("mf candidate: holdout evaluation: stream", holdout),
        ("mf on all events: MF sweeps", SMALL_MF.iterations),
        ("drift reference", None),
    ]


def test_an_lgbm_candidate_reports_its_rows_and_boosting_rounds() -> None:
    progress = Recorder()
    train_candidate(
        ModelKind.LGBM, HISTORY, SETTINGS, "lgbm-1", mf_params=SMALL_MF, ranker_params=TINY_RANKER, progress=progress
    )
    steps = [step for step, _ in progress.steps()]
    assert steps == [
        "lgbm candidate: before the label window: MF sweeps",
        "lgbm candidate: ranker's training rows",
        "lgbm candidate: ranker's boosting rounds",
        "lgbm candidate: MF sweeps",
        "lgbm candidate: holdout evaluation: stream",
        "lgbm on all events: before the label window: MF sweeps",
        "lgbm on all events: ranker's training rows",
        "lgbm on all events: ranker's boosting rounds",
        "lgbm on all events: MF sweeps",
        "drift reference",
    ]
    assert dict(progress.steps())["lgbm on all events: ranker's boosting rounds"] == TINY_RANKER.rounds
