"""Implicit-feedback matrix factorisation in numpy (weighted alternating least squares).

Each observed (user, item) pair has a preference p (1 for positive events, 0 for dislikes) and a confidence
c = 1 + alpha * |weight| * recency, where weight is the summed event weight and recency halves every
`recency_half_life_days` before the end of the training window: this data moves fast, so recent interactions
count more. Every unobserved pair is a weak negative (p = 0, c = 1), which is what sampling negatives
approximates; ALS handles all of them exactly through the Gram matrix. Users new to the model are folded in
at request time from their recent items with the same objective, so one event personalises the next request.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recloop.core.events import Interaction
from recloop.core.progress import Progress, no_progress
from recloop.models.bundle import ModelBundle, ModelKind, ModelMetadata
from recloop.models.loading import register_loader

FACTORS_FILE = "mf.npz"
IDS_FILE = "mf_ids.json"


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on the calling thread alone, for a request's products. They are too small to share out, and where the
    CPU is scarce (a Lambda's one vCPU, which reports two; a busy host) BLAS threads wait on each other: a
    100k-item scan took 10 times longer with two threads than with one on a loaded two-core host."""
    # The libraries' own setters, found once: threadpoolctl's `limit` costs about 30 µs per request around them.
    libraries = _blas_libraries().lib_controllers
    before = [library.get_num_threads() for library in libraries]
    for library in libraries:
        library.set_num_threads(1)
    try:
        yield
    finally:
        for library, threads in zip(libraries, before, strict=True):
            library.set_num_threads(threads)


@functools.cache
def _blas_libraries() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


@dataclass(frozen=True)
class MFHyperparameters:
    factors: int = 48
    iterations: int = 8
    regularisation: float = 0.1
    alpha: float = 20.0
    recency_half_life_days: float = 21.0
    dislike_confidence: float = 2.0
    seed: int = 17


@dataclass
class MatrixFactorisation:
    item_ids: list[str]
    item_factors: np.ndarray  # (items, factors) float32
    user_ids: list[str]
    user_factors: np.ndarray  # (users, factors) float32
    regularisation: float
    alpha: float
    item_index: dict[str, int] = field(init=False)
    user_index: dict[str, int] = field(init=False)
    _gram: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.item_index = {item: n for n, item in enumerate(self.item_ids)}
        self.user_index = {user: n for n, user in enumerate(self.user_ids)}
        factors = self.item_factors.astype(np.float64)
        self._gram = factors.T @ factors

    @property
    def factors(self) -> int:
        return self.item_factors.shape[1]

    @property
    def item_gram(self) -> np.ndarray:
        """Y^T Y of the item factors (float64): the unobserved-items term of every user solve."""
        return self._gram

    @property
    def user_gram(self) -> np.ndarray:
        """X^T X of the user factors (float64), computed on first use: the same term of every item solve."""
        gram = self.__dict__.get("_user_gram")
        if gram is None:
            users = self.user_factors.astype(np.float64)
            gram = self.__dict__["_user_gram"] = users.T @ users
        return gram

    def append_items(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Adds items after the existing ones, in place. Spare rows are kept after the last item, so that an
        append copies the catalogue's factors only once in a while, not each time."""
        start, end = len(self.item_ids), len(self.item_ids) + len(item_ids)
        storage = self.__dict__.get("_item_storage")
        if storage is None or self.item_factors.base is not storage or storage.shape[0] < end:
            storage = np.empty((end + max(end // 8, 1024), self.factors), dtype=np.float32)
            storage[:start] = self.item_factors
            self.__dict__["_item_storage"] = storage
        storage[start:end] = vectors
        self.item_factors = storage[:end]
        self.item_ids.extend(item_ids)
        self.item_index.update({item: start + n for n, item in enumerate(item_ids)})

    def truncate_items(self, count: int) -> None:
        """Keeps the first `count` items: undoes appends."""
        for item in self.item_ids[count:]:
            del self.item_index[item]
        del self.item_ids[count:]
        self.item_factors = self.item_factors[:count]

    def set_grams(self, item_gram: np.ndarray, user_gram: np.ndarray) -> None:
        """Gram matrices kept up to date by the caller (online updates change few rows of many)."""
        self._gram = item_gram
        self.__dict__["_user_gram"] = user_gram

    def fold_in(self, items: Sequence[str], weights: Sequence[float]) -> np.ndarray | None:
        """A user vector from (item, weight) pairs, item factors fixed; None when no item is known."""
        rows, prefs, confs = [], [], []
        for item, weight in zip(items, weights, strict=True):
            index = self.item_index.get(item)
            if index is None or weight == 0:
                continue
            rows.append(index)
            prefs.append(1.0 if weight > 0 else 0.0)
            confs.append(1.0 + self.alpha * abs(weight))
        if not rows:
            return None
        return _solve_one(
            self._gram,
            self.item_factors[rows].astype(np.float64),
            np.array(prefs),
            np.array(confs),
            self.regularisation,
        ).astype(np.float32)

    def user_vector(self, user_id: str, items: Sequence[str] = (), weights: Sequence[float] = ()) -> np.ndarray | None:
        """The trained vector of a known user, else one folded in from the given history."""
        index = self.user_index.get(user_id)
        if index is not None:
            return self.user_factors[index]
        return self.fold_in(items, weights)

    def positions(self, items: Sequence[str]) -> np.ndarray:
        """Each item's row of the item factors; -1 for items the model does not know."""
        # map over dict.get loops in C: a generator costs about 0.4 µs per candidate more.
        return np.fromiter(map(self.item_index.get, items, itertools.repeat(-1)), dtype=np.int64, count=len(items))

    def scores(self, vector: np.ndarray, items: Sequence[str]) -> np.ndarray:
        """Scores of the given items (0 for items the model does not know)."""
        return self.scores_at(vector, self.positions(items))

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Scores of the items at `positions` (0 where a position is -1)."""
        known = positions >= 0
        out = np.zeros(len(positions), dtype=np.float32)
        if known.any():
            out[known] = self.item_factors[positions[known]] @ vector
        return out

    def top_items(self, vector: np.ndarray, count: int, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        """The `count` best-scored items, best first (equal scores in catalogue order), none of `exclude`: one
        product over the catalogue into a buffer kept between calls, excluded items set to -inf, a partition for
        the count-th best score and a sort of the few items at or above it."""
        catalogue = len(self.item_ids)
        scores = self._score_buffer(catalogue)
        with single_threaded_blas():
            np.matmul(self.item_factors, vector, out=scores)
        excluded = [n for item in exclude if (n := self.item_index.get(item)) is not None]
        scores[excluded] = -np.inf
        want = min(count, catalogue - len(excluded))
        if want <= 0:
            return []
        # The scores alone partition faster than their indexes (argpartition); the items at or above the
        # threshold are then few, all of them kept so that ties at the threshold go to the earlier items.
        threshold = np.partition(scores, catalogue - want)[catalogue - want]
        top = np.flatnonzero(scores >= threshold)
        top = top[np.argsort(-scores[top], kind="stable")][:want]
        ids = self.item_ids
        return [(ids[n], score) for n, score in zip(top.tolist(), scores[top].tolist(), strict=True)]

    def _score_buffer(self, size: int) -> np.ndarray:
        """Scratch space for a catalogue's scores, reused by every request (an instance serves one at a time)."""
        buffer = self.__dict__.get("_scores")
        if buffer is None or buffer.shape[0] < size:
            buffer = self.__dict__["_scores"] = np.empty(size + max(size // 8, 1024), dtype=np.float32)
        return buffer[:size]

    def to_bundle(self, metadata: ModelMetadata) -> ModelBundle:
        buffer = io.BytesIO()
        # Uncompressed: float factors barely compress (7%) and zlib costs about a second per 100k rows.
        np.savez(buffer, item_factors=self.item_factors, user_factors=self.user_factors)
        ids = {
            "items": self.item_ids,
            "users": self.user_ids,
            "regularisation": self.regularisation,
            "alpha": self.alpha,
        }
        return ModelBundle(metadata, {FACTORS_FILE: buffer.getvalue(), IDS_FILE: json.dumps(ids).encode()})

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> MatrixFactorisation:
        arrays = np.load(io.BytesIO(bundle.files[FACTORS_FILE]))
        ids = json.loads(bundle.files[IDS_FILE])
        model = cls(
            ids["items"],
            arrays["item_factors"].astype(np.float32),
            ids["users"],
            arrays["user_factors"].astype(np.float32),
            float(ids["regularisation"]),
            float(ids["alpha"]),
        )
        if model.item_factors.shape[0] != len(model.item_ids) or model.user_factors.shape[0] != len(model.user_ids):
            raise ValueError("factor matrices do not match their id lists")
        return model


@register_loader(ModelKind.MF)
def load_mf(bundle: ModelBundle) -> MatrixFactorisation:
    return MatrixFactorisation.from_bundle(bundle)


def interaction_matrix(
    events: Sequence[Interaction], half_life_days: float, dislike_confidence: float, alpha: float
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users, items and the observed (user, item, preference, confidence) quadruples."""
    end = max(e.timestamp for e in events)
    half_life = half_life_days * 86_400.0
    weights: dict[tuple[str, str], float] = {}
    for event in events:
        recency = 0.5 ** ((end - event.timestamp) / half_life)
        key = (event.user_id, event.item_id)
        weights[key] = weights.get(key, 0.0) + event.weight * recency
    users = sorted({u for u, _ in weights})
    items = sorted({i for _, i in weights})
    user_index = {u: n for n, u in enumerate(users)}
    item_index = {i: n for n, i in enumerate(items)}
    rows = np.fromiter((user_index[u] for u, _ in weights), dtype=np.int64, count=len(weights))
    cols = np.fromiter((item_index[i] for _, i in weights), dtype=np.int64, count=len(weights))
    total = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
    prefs = (total > 0).astype(np.float64)
    confs = np.where(total > 0, 1.0 + alpha * total, dislike_confidence)
    return users, items, rows, cols, prefs, confs


def train_mf(
    events: Sequence[Interaction],
    params: MFHyperparameters = MFHyperparameters(),
    *,
    progress: Progress = no_progress,
) -> MatrixFactorisation:
    users, items, rows, cols, prefs, confs = interaction_matrix(
        events, params.recency_half_life_days, params.dislike_confidence, params.alpha
    )
    rng = np.random.default_rng(params.seed)
    user_factors = rng.normal(0, 0.01, (len(users), params.factors))
    item_factors = rng.normal(0, 0.01, (len(items), params.factors))
    by_user = _group(rows, cols, prefs, confs, len(users))
    by_item = _group(cols, rows, prefs, confs, len(items))
    for sweep in range(params.iterations):
        user_factors = _sweep(item_factors, by_user, params.regularisation)
        item_factors = _sweep(user_factors, by_item, params.regularisation)
        progress("MF sweeps", sweep + 1, params.iterations)
    return MatrixFactorisation(
        items,
        item_factors.astype(np.float32),
        users,
        user_factors.astype(np.float32),
        params.regularisation,
        params.alpha,
    )


def _group(keys: np.ndarray, others: np.ndarray, prefs: np.ndarray, confs: np.ndarray, count: int) -> list:
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(count + 1))
    return [(others[order[a:b]], prefs[order[a:b]], confs[order[a:b]]) for a, b in itertools.pairwise(bounds)]


def _sweep(fixed: np.ndarray, groups: list, regularisation: float) -> np.ndarray:
    gram = fixed.T @ fixed
    solved = np.zeros((len(groups), fixed.shape[1]))
    for n, (indexes, prefs, confs) in enumerate(groups):
        if len(indexes):
            solved[n] = _solve_one(gram, fixed[indexes], prefs, confs, regularisation)
    return solved


def _solve_one(gram: np.ndarray, factors: np.ndarray, prefs: np.ndarray, confs: np.ndarray, reg: float) -> np.ndarray:
    """argmin_x sum_all c (p - x.y)^2 + reg |x|^2 with c = 1, p = 0 off the observed rows (Hu, Koren, Volinsky)."""
    weighted = factors * (confs - 1.0)[:, None]
    matrix = gram + factors.T @ weighted + reg * np.eye(gram.shape[0])
    rhs = factors.T @ (confs * prefs)
    return np.linalg.solve(matrix, rhs)
