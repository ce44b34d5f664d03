"""LightGBM's `Booster.refit` of a LambdaRank ranker's leaf values, computed in numpy from the model text.

`Booster.refit` keeps each tree's structure and, tree after tree, sets each leaf to
`decay * old + (1 - decay) * shrinkage * fitted`, where `fitted` is the leaf's Newton step on the LambdaRank
gradients of the new data at the scores of the trees refit before it. At the online update's size (~1,500
rows, 120 trees) LightGBM spends most of a refit setting itself up: a Dataset, a Booster whose LambdaRank
objective fills a sigmoid table of 2^20 entries, a copy of every tree, and two more predictions to judge the
result. Here the same arithmetic runs on the leaf indices of one `pred_leaf` call, and the refit model's text
is written only when it is kept. The sigmoid is computed rather than looked up in LightGBM's table, so leaf
values agree with `Booster.refit` to about 1e-4 (`tests/integration/test_online_ranker.py` checks this).

What the ranker's training can produce is supported: the `lambdarank` objective, LambdaRank's sigmoid,
truncation level, normalisation and label gains, L1/L2 leaf regularisation and `max_delta_step`. A model
with path smoothing or linear trees is refused (ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np

EPSILON = 1e-15  # LightGBM's kEpsilon, the initial hessian sum of a leaf


@dataclass(frozen=True)
class LambdaRankConfig:
    """The parameters of the trained model that `Booster.refit` uses (LightGBM's defaults otherwise)."""

    sigmoid: float = 1.0
    truncation_level: int = 30
    norm: bool = True
    label_gain: tuple[float, ...] = ()  # empty: 2^label - 1
    lambda_l1: float = 0.0
    lambda_l2: float = 0.0
    max_delta_step: float = 0.0

    @classmethod
    def of(cls, parameters: dict[str, str]) -> LambdaRankConfig:
        if float(parameters.get("path_smooth", "0") or 0) > 0:
            raise ValueError("refitting a ranker trained with path_smooth is not supported")
        gain = parameters.get("label_gain", "")
        return cls(
            sigmoid=float(parameters.get("sigmoid", 1.0)),
            truncation_level=int(parameters.get("lambdarank_truncation_level", 30)),
            norm=parameters.get("lambdarank_norm", "1") in ("1", "true"),
            label_gain=tuple(float(g) for g in gain.replace(",", " ").split()),
            lambda_l1=float(parameters.get("lambda_l1", 0.0)),
            lambda_l2=float(parameters.get("lambda_l2", 0.0)),
            max_delta_step=float(parameters.get("max_delta_step", 0.0)),
        )

    def gains(self, labels: np.ndarray) -> np.ndarray:
        grades = labels.astype(np.int64)
        if self.label_gain:
            return np.asarray(self.label_gain, dtype=np.float64)[grades]
        return np.exp2(grades) - 1.0


@dataclass(frozen=True)
class LeafTable:
    """A LambdaRank booster's model text, split so that its leaf values can be read and replaced."""

    values: np.ndarray  # (trees, most leaves) float64: leaf values, 0 beyond a tree's leaves
    leaves: np.ndarray  # (trees,) leaves per tree
    shrinkage: np.ndarray  # (trees,)
    config: LambdaRankConfig
    header: tuple[str, str]  # the text before the first tree, before and after its `tree_sizes=` line
    tree_parts: tuple[tuple[str, str], ...]  # each tree's text before and after its leaf values
    footer: str  # "end of trees" and what follows
    structure: Any = None  # a lightgbm.Booster with these trees, whatever its leaf values: finds rows' leaves

    @classmethod
    def parse(cls, model_string: str, structure: Any = None) -> LeafTable:
        first = model_string.index("\nTree=") + 1
        end = model_string.index("end of trees")
        header, footer = model_string[:first], model_string[end:]
        if "\nobjective=lambdarank" not in header:
            raise ValueError("only a lambdarank ranker's leaves can be refit")
        parameters = {}
        for line in footer.split("\n"):
            if line.startswith("[") and ": " in line:
                key, _, value = line[1:-1].partition(": ")
                parameters[key] = value
        parts, values, shrinkage = [], [], []
        for block in _tree_blocks(model_string[first:end]):
            if "\nis_linear=1" in block:
                raise ValueError("refitting a ranker with linear trees is not supported")
            start, stop = _line_value(block, "leaf_value")
            parts.append((block[:start], block[stop:]))
            values.append(np.array(block[start:stop].split(), dtype=np.float64))
            shrink_start, shrink_stop = _line_value(block, "shrinkage")
            shrinkage.append(float(block[shrink_start:shrink_stop]))
        leaves = np.array([len(v) for v in values], dtype=np.int64)
        table = np.zeros((len(values), int(leaves.max(initial=1))))
        for tree, tree_values in enumerate(values):
            table[tree, : len(tree_values)] = tree_values
        sizes_start, sizes_stop = _line_value(header, "tree_sizes")
        around_sizes = (header[: sizes_start - len("tree_sizes=")], header[sizes_stop + 1 :])
        config = LambdaRankConfig.of(parameters)
        parsed = cls(table, leaves, np.array(shrinkage), config, around_sizes, tuple(parts), footer, structure)
        parsed.__dict__["text"] = model_string  # the text it was read from: nothing to write
        return parsed

    @cached_property
    def text(self) -> str:
        """The model text with these leaf values (and tree sizes to match), as LightGBM writes and reads it."""
        trees = [
            before + " ".join(map(_number, self.values[tree, : self.leaves[tree]].tolist())) + after
            for tree, (before, after) in enumerate(self.tree_parts)
        ]
        sizes = "tree_sizes=" + " ".join(str(len(tree.encode())) for tree in trees) + "\n"
        return self.header[0] + sizes + self.header[1] + "".join(trees) + self.footer

    def scores(self, leaf_index: np.ndarray) -> np.ndarray:
        """Raw scores of rows from their leaf per tree (`pred_leaf`): what `Booster.predict` returns."""
        return self.values[np.arange(self.values.shape[0]), leaf_index].sum(axis=1)

    def refit(self, leaf_index: np.ndarray, labels: np.ndarray, groups: list[int], decay: float) -> LeafTable:
        """`Booster.refit` on rows given by their leaf per tree (`pred_leaf`), labels and query sizes."""
        return replace(self, values=_LambdaRankRefit(self, leaf_index, labels, groups).run(decay))


def _number(value: float) -> str:
    """A leaf value as LightGBM writes it (17 significant digits)."""
    return format(value, ".17g")


def _line_value(block: str, key: str) -> tuple[int, int]:
    """Where the value of the model text's `key=` line starts and ends."""
    start = block.index(f"\n{key}=") + len(key) + 2
    return start, block.index("\n", start)


def _tree_blocks(text: str) -> list[str]:
    """The text of each tree, from its `Tree=` line to the next."""
    starts = [0]
    position = text.find("\nTree=", 0)
    while position >= 0:
        starts.append(position + 1)
        position = text.find("\nTree=", position + 1)
    starts.append(len(text))
    return [text[a:b] for a, b in pairwise(starts) if b > a]


class _LambdaRankRefit:
    """The refit's working state. Rows sit in a (queries x longest query) grid, the padding scored lowest so
    that a stable sort by score puts it last, as if it did not exist. The gradients are kept per pair of rows
    of different grades and summed straight into each tree's leaves."""

    PAD_SCORE = -1e300

    def __init__(self, table: LeafTable, leaf_index: np.ndarray, labels: np.ndarray, groups: list[int]) -> None:
        config = table.config
        self.table, self.config = table, config
        sizes = np.asarray(groups, dtype=np.int64)
        queries, width = len(sizes), int(sizes.max(initial=1))
        valid = np.arange(width)[None, :] < sizes[:, None]
        self.shape = (queries, width)
        self.cells = np.flatnonzero(valid.ravel())  # each row's cell in the grid, in row order
        grades = np.full((queries, width), -1.0)
        grades.ravel()[self.cells] = labels
        # Pairs of different grades within a query, the higher graded first (padding grades below any row).
        query, high, low = np.nonzero((grades[:, :, None] > grades[:, None, :]) & valid[:, None, :])
        self.high, self.low, self.pair_query = query * width + high, query * width + low, query
        gains = config.gains(np.maximum(grades, 0)) * valid
        discount = 1.0 / np.log2(np.arange(width) + 2.0)
        ideal = -np.sort(-gains, axis=1)[:, : config.truncation_level]
        max_dcg = ideal @ discount[: ideal.shape[1]]
        inverse_max_dcg = np.divide(1.0, max_dcg, out=np.zeros(queries), where=max_dcg > 0)
        self.pair_weight = (gains.ravel()[self.high] - gains.ravel()[self.low]) * inverse_max_dcg[query]
        self.position_discount = np.tile(discount, queries)  # the discount of each position of the sorted grid
        self.base = (np.arange(queries) * width)[:, None]
        self.truncated = width > config.truncation_level
        # Per tree, the leaf of each pair's rows, offset so that one bincount sums the pairs' gradients
        # (high rows, then low rows) and hessians (high, then low) per leaf.
        self.leaves = table.values.shape[1]
        pair_leaf_high = leaf_index[np.searchsorted(self.cells, self.high)].T
        pair_leaf_low = leaf_index[np.searchsorted(self.cells, self.low)].T
        step = self.leaves
        self.pair_leaves = np.concatenate(
            [pair_leaf_high, pair_leaf_low + step, pair_leaf_high + 2 * step, pair_leaf_low + 3 * step], axis=1
        )
        # Per tree, the leaf of each cell; the padding falls in an extra leaf of value 0.
        self.cell_leaf = np.full((table.values.shape[0], queries * width), step, dtype=np.int64)
        self.cell_leaf[:, self.cells] = leaf_index.T

    def run(self, decay: float) -> np.ndarray:
        config, table = self.config, self.table
        sigma, leaves = config.sigmoid, self.leaves
        scores = np.full(self.shape[0] * self.shape[1], self.PAD_SCORE)
        scores[self.cells] = 0.0
        discount = np.empty_like(scores)
        refit = decay * table.values
        step_scale = (1.0 - decay) * table.shrinkage
        leaf_values = np.zeros(leaves + 1)
        for tree in range(refit.shape[0]):
            order = (np.argsort(-scores.reshape(self.shape), axis=1, kind="stable") + self.base).ravel()
            discount[order] = self.position_discount
            delta = scores[self.high] - scores[self.low]
            weight = self.pair_weight * np.abs(discount[self.high] - discount[self.low])
            if self.truncated:  # pairs count only if one of the rows ranks above the truncation level
                rank = np.empty(len(scores), dtype=np.int64)
                rank[order] = np.tile(np.arange(self.shape[1]), self.shape[0])
                weight *= np.minimum(rank[self.high], rank[self.low]) < config.truncation_level
            if config.norm:
                distance = np.abs(delta)
                # A query whose rows all score the same (every pair at distance 0) is not normalised.
                spread = np.bincount(self.pair_query, distance, self.shape[0]) > 0
                weight /= 0.01 + distance
                if not spread.all():
                    weight *= np.where(spread, 1.0, 0.01)[self.pair_query]
            p = 1.0 / (1.0 + np.exp(sigma * delta))
            push = weight * p  # |lambda| / sigma of each pair
            if config.norm:
                total = 2.0 * sigma * np.bincount(self.pair_query, push, self.shape[0])
                push *= (np.log2(1.0 + total) / np.maximum(total, 1e-300))[self.pair_query]
            curve = push * (1.0 - p)  # hessian / sigma^2
            sums = np.bincount(self.pair_leaves[tree], np.concatenate([push, push, curve, curve]), 4 * leaves)
            gradient = -sigma * (sums[:leaves] - sums[leaves : 2 * leaves])
            hessian = sigma * sigma * (sums[2 * leaves : 3 * leaves] + sums[3 * leaves :]) + EPSILON
            n = table.leaves[tree]
            refit[tree, :n] += step_scale[tree] * self._leaf_output(gradient[:n], hessian[:n])
            leaf_values[:leaves] = refit[tree]
            scores += leaf_values[self.cell_leaf[tree]]
        return refit

    def _leaf_output(self, sum_gradient: np.ndarray, sum_hessian: np.ndarray) -> np.ndarray:
        config = self.config
        if config.lambda_l1 > 0:
            sum_gradient = np.sign(sum_gradient) * np.maximum(np.abs(sum_gradient) - config.lambda_l1, 0.0)
        output = -sum_gradient / (sum_hessian + config.lambda_l2)
        if config.max_delta_step > 0:
            output = np.clip(output, -config.max_delta_step, config.max_delta_step)
        return output
