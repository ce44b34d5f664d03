"""The ranker's online step: LightGBM leaf values refit, with a decay, on queries served from the buffer's time.

The trees' structure stays; each leaf's value becomes `decay * old + (1 - decay) * fitted on new data`
(`Booster.refit`), so the ranker follows slow shifts in how features relate to relevance (popularity levels,
item ages, activity) without a retrain. Queries come from the served-feature log (`recloop.serving.served_log`):
features as they were when each recommendation was served, labelled by what the user did next.

The queries served from the buffer's held-out part judge the refit by NDCG@10 of their relevant items; the
refit is kept only if that did not get worse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recloop.core.events import K
from recloop.models.leaf_refit import LeafTable

if TYPE_CHECKING:
    from recloop.models.ranker import RankerModel

MIN_TRAIN_QUERIES = 20
MIN_HELDOUT_QUERIES = 5
# The refit's cost grows with rows x trees (leaf predictions, LambdaRank gradients): it uses the most recent
# queries, each with its relevant rows and a sample of the others, as training does; as many held-out queries
# at most, sampled the same way (the same rows judge the ranker before and after).
MAX_REFIT_QUERIES = 150
REFIT_NEGATIVES = 9


@dataclass(frozen=True)
class LabelledQueries:
    rows: Any  # np.ndarray
    labels: Any  # np.ndarray, 1 for an item the user then had a positive event with, else 0
    groups: list[int]  # rows per query, in order
    times: list[float]  # when each query was served

    def __len__(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class RefitStep:
    trees: LeafTable  # the refit leaf values
    ndcg_before: float
    ndcg_after: float
    train_queries: int
    heldout_queries: int
    tolerance: float = 0.0

    @property
    def improved(self) -> bool:
        """Kept only if held-out NDCG@10 did not drop beyond the tolerance (relative)."""
        return bool(np.isfinite(self.ndcg_after) and self.ndcg_after >= self.ndcg_before * (1 - self.tolerance))


def _subset(
    queries: LabelledQueries, keep: list[int], negatives: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The kept queries' rows: each query's relevant rows plus `negatives` of the others at random."""
    sizes = np.asarray(queries.groups)[keep]
    owner = np.repeat(np.arange(len(keep)), sizes)
    position = np.arange(int(sizes.sum())) - np.repeat(np.r_[0, np.cumsum(sizes)[:-1]], sizes)  # within its query
    rows = np.r_[0, np.cumsum(queries.groups)][keep][owner] + position
    relevant = queries.labels[rows] > 0
    # Within each query: relevant rows first, then the others in a random order, of which the first are kept.
    key = np.where(relevant, -1.0, np.random.default_rng(seed).random(len(rows)))
    order = np.lexsort((key, owner))
    wanted = np.bincount(owner, relevant, len(keep)).astype(np.int64) + negatives
    chosen = order[position < wanted[owner]]
    chosen = chosen[np.lexsort((chosen, ~relevant[chosen], owner[chosen]))]  # relevant first; each in row order
    picked = rows[chosen]
    return queries.rows[picked], queries.labels[picked], np.bincount(owner[chosen], minlength=len(keep)).tolist()


def ndcg_at_k(scores: np.ndarray, labels: np.ndarray, groups: list[int], k: int = K) -> float:
    """Mean NDCG@k over queries (binary relevance)."""
    if not groups:
        return 0.0
    sizes = np.asarray(groups)
    width = max(int(sizes.max()), k)
    cells = np.flatnonzero((np.arange(width)[None, :] < sizes[:, None]).ravel())
    grid = np.full(len(groups) * width, -np.inf)  # padding ranks below every row
    grid[cells] = scores
    relevance = np.zeros(len(groups) * width)
    relevance[cells] = labels
    grid, relevance = grid.reshape(-1, width), relevance.reshape(-1, width)
    top = np.argsort(-grid, axis=1, kind="stable")[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (np.take_along_axis(relevance, top, axis=1) * discounts).sum(axis=1)
    ideal = np.r_[0.0, np.cumsum(discounts)][np.minimum(relevance.sum(axis=1).astype(np.int64), k)]
    return float(np.mean(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)))


def refit_ranker(
    model: RankerModel, queries: LabelledQueries, heldout_from: float, decay: float, tolerance: float = 0.0
) -> RefitStep | None:
    """Refit on the queries served before `heldout_from`, judged on those served after; None if too few."""
    train = [n for n, t in enumerate(queries.times) if t < heldout_from][-MAX_REFIT_QUERIES:]
    heldout = [n for n, t in enumerate(queries.times) if t >= heldout_from][-MAX_REFIT_QUERIES:]
    if len(train) < MIN_TRAIN_QUERIES or len(heldout) < MIN_HELDOUT_QUERIES:
        return None
    rows, labels, groups = _subset(queries, train, REFIT_NEGATIVES)
    h_rows, h_labels, h_groups = _subset(queries, heldout, REFIT_NEGATIVES, seed=1)
    # Refitting changes leaf values only, so one pass finds every row's leaves for the refit and both judgements.
    leaf_index = model.leaf_index(np.vstack([rows, h_rows]))
    trees = model.leaf_table()
    refitted = trees.refit(leaf_index[: len(rows)], labels, groups, decay)
    heldout_leaves = leaf_index[len(rows) :]
    before = ndcg_at_k(trees.scores(heldout_leaves), h_labels, h_groups)
    after = ndcg_at_k(refitted.scores(heldout_leaves), h_labels, h_groups)
    return RefitStep(refitted, before, after, len(train), len(heldout), tolerance)
