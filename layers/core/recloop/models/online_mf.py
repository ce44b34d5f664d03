"""One online update of a model's MF vectors from a buffer of recent events, and its held-out check.

The buffer (oldest first) is split by time: the first part trains, the last `holdout_fraction` judges.

1. The catalogue grows: an item first seen in the training part gets a vector solved from the vectors of
   the users who interacted with it (the item-side fold-in of the same weighted objective the model was
   trained with), so a new item can be recommended by MF after its first update, not after a retrain.
2. Mini-batch SGD (`batch_size`, `learning_rate`) on the weighted implicit objective: each observed
   (user, item) pair of the training part, with confidence c = 1 + alpha * |weight| and preference 1 (0 for a
   dislike), plus `negatives` sampled items per pair as weak negatives (p = 0, c = 1), over `epochs`
   passes. User and item vectors both move. Users the model does not know take a transient vector folded in
   from their buffered events: they are served by request-time fold-in from their full history, which is
   fresher than anything stored here.
3. The held-out error, the mean of c * (p - x.y)^2 over the held-out pairs and a fixed sample of negatives,
   is computed with the model before and after; the caller publishes the update only if it did not get worse.

The model passed in is never modified: the update works on copies, so a rejected update costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recloop.interactions import Interaction
from recloop.models.mf import MatrixFactorisation, _solve_one


@dataclass(frozen=True)
class OnlineHyperparameters:
    batch_size: int = 32
    learning_rate: float = 0.001
    epochs: int = 4
    negatives: int = 4
    holdout_fraction: float = 0.2
    grow_items: bool = True
    seed: int = 29


@dataclass(frozen=True)
class OnlineStep:
    """What one update produced: the new MF (a copy) and how it did against the one before."""

    mf: MatrixFactorisation
    error_before: float
    error_after: float
    train_pairs: int
    holdout_pairs: int
    new_items: int
    updated_users: int
    updated_items: int

    @property
    def improved(self) -> bool:
        """Published only if the held-out error is finite and no worse than before (a diverged step is not)."""
        return math.isfinite(self.error_after) and self.error_after <= self.error_before


@dataclass(frozen=True)
class _Pairs:
    users: list[str]
    items: list[str]
    prefs: np.ndarray
    confs: np.ndarray


def _pairs(events: Sequence[Interaction], alpha: float) -> _Pairs:
    """Events summed per (user, item): preference 1 if the total weight is positive, else 0 (a dislike)."""
    weights: dict[tuple[str, str], float] = {}
    for event in events:
        key = (event.user_id, event.item_id)
        weights[key] = weights.get(key, 0.0) + event.weight
    kept = [(key, w) for key, w in weights.items() if w != 0]
    total = np.array([w for _, w in kept], dtype=np.float64)
    return _Pairs(
        [u for (u, _), _ in kept],
        [i for (_, i), _ in kept],
        (total > 0).astype(np.float64),
        1.0 + alpha * np.abs(total),
    )


class _Working:
    """Mutable copies of the factors, grown by new items, plus transient vectors for users new to the model."""

    def __init__(self, mf: MatrixFactorisation) -> None:
        self.mf = mf
        self.item_ids = list(mf.item_ids)
        self.item_index = dict(mf.item_index)
        self.items = mf.item_factors.astype(np.float64)  # copies
        self.users = mf.user_factors.astype(np.float64)
        self.transient: dict[str, np.ndarray] = {}

    def user_rows(self, users: Sequence[str]) -> np.ndarray:
        """Indices into `users` (>= 0) or into `transient` (encoded as -1 - n)."""
        out = np.empty(len(users), dtype=np.int64)
        names = list(self.transient)
        position = {u: n for n, u in enumerate(names)}
        for n, user in enumerate(users):
            index = self.mf.user_index.get(user)
            out[n] = index if index is not None else -1 - position[user]
        return out


def _fold_in_users(work: _Working, pairs: _Pairs, reg: float) -> None:
    """Transient vectors for users the model does not know, from their training pairs (item vectors fixed)."""
    gram = work.items.T @ work.items
    grouped: dict[str, list[int]] = {}
    for n, user in enumerate(pairs.users):
        if user not in work.mf.user_index:
            grouped.setdefault(user, []).append(n)
    for user, rows in grouped.items():
        items = [work.item_index.get(pairs.items[r], -1) for r in rows]
        keep = [k for k, i in enumerate(items) if i >= 0]
        if not keep:
            work.transient[user] = np.zeros(work.items.shape[1])
            continue
        idx = np.array([items[k] for k in keep])
        sel = np.array([rows[k] for k in keep])
        work.transient[user] = _solve_one(gram, work.items[idx], pairs.prefs[sel], pairs.confs[sel], reg)


def _grow_items(work: _Working, pairs: _Pairs, reg: float) -> int:
    """Vectors for items new to the model, solved from the vectors of the users who interacted with them."""
    grouped: dict[str, list[int]] = {}
    for n, item in enumerate(pairs.items):
        if item not in work.item_index:
            grouped.setdefault(item, []).append(n)
    if not grouped:
        return 0
    user_gram = work.users.T @ work.users
    new_vectors = []
    for item, rows in grouped.items():
        vectors = np.array([_user_vector(work, pairs.users[r]) for r in rows])
        new_vectors.append(_solve_one(user_gram, vectors, pairs.prefs[rows], pairs.confs[rows], reg))
        work.item_index[item] = len(work.item_ids)
        work.item_ids.append(item)
    work.items = np.vstack([work.items, np.array(new_vectors)])
    return len(grouped)


def _user_vector(work: _Working, user: str) -> np.ndarray:
    index = work.mf.user_index.get(user)
    return work.users[index] if index is not None else work.transient[user]


def heldout_error(
    item_factors: np.ndarray,
    item_index: dict[str, int],
    user_vectors: list[np.ndarray | None],
    pairs: _Pairs,
    negative_items: np.ndarray,
) -> float:
    """Mean of c * (p - x.y)^2 over held-out pairs and their negatives; unknown users or items predict 0."""
    total, count = 0.0, 0
    for n, vector in enumerate(user_vectors):
        index = item_index.get(pairs.items[n], -1)
        predicted = float(item_factors[index] @ vector) if vector is not None and index >= 0 else 0.0
        total += pairs.confs[n] * (pairs.prefs[n] - predicted) ** 2
        count += 1
        if vector is not None:  # negatives: p = 0, c = 1
            total += float(np.sum((item_factors[negative_items[n]] @ vector) ** 2))
        count += negative_items.shape[1]
    return total / count if count else 0.0


def _holdout_vectors(
    mf_items: np.ndarray,
    item_index: dict[str, int],
    *,
    work_users: Any,
    user_index: dict[str, int],
    pairs: _Pairs,
    train: _Pairs,
    reg: float,
) -> list[np.ndarray | None]:
    """The model's vector of each held-out pair's user: trained, else folded in from the training part."""
    gram = mf_items.T @ mf_items
    cache: dict[str, np.ndarray | None] = {}
    by_user: dict[str, list[int]] = {}
    for n, user in enumerate(train.users):
        by_user.setdefault(user, []).append(n)
    out: list[np.ndarray | None] = []
    for user in pairs.users:
        if user not in cache:
            index = user_index.get(user)
            if index is not None:
                cache[user] = work_users[index]
            else:
                rows = [r for r in by_user.get(user, []) if train.items[r] in item_index]
                if rows:
                    idx = np.array([item_index[train.items[r]] for r in rows])
                    cache[user] = _solve_one(gram, mf_items[idx], train.prefs[rows], train.confs[rows], reg)
                else:
                    cache[user] = None
        out.append(cache[user])
    return out


def update_mf(
    mf: MatrixFactorisation, events: Sequence[Interaction], params: OnlineHyperparameters = OnlineHyperparameters()
) -> OnlineStep:
    """One online update of `mf` from `events` (oldest first); `mf` itself is left unchanged."""
    ordered = sorted(events, key=lambda e: e.timestamp)
    cut = len(ordered) - max(1, round(len(ordered) * params.holdout_fraction)) if len(ordered) > 1 else 1
    train, holdout = _pairs(ordered[:cut], mf.alpha), _pairs(ordered[cut:], mf.alpha)
    rng = np.random.default_rng(params.seed)
    with np.errstate(all="ignore"):  # a diverging step shows as a non-finite held-out error, not a warning
        return _update(mf, train, holdout, params, rng)


def _update(
    mf: MatrixFactorisation, train: _Pairs, holdout: _Pairs, params: OnlineHyperparameters, rng: np.random.Generator
) -> OnlineStep:
    reg = mf.regularisation
    work = _Working(mf)
    _fold_in_users(work, train, reg)
    new_items = _grow_items(work, train, reg) if params.grow_items else 0

    # Negatives for the held-out check, drawn from the items both models know, fixed for before and after.
    known_items = len(mf.item_ids)
    heldout_negatives = rng.integers(0, known_items, size=(len(holdout.users), params.negatives))
    before_vectors = _holdout_vectors(
        mf.item_factors,
        mf.item_index,
        work_users=mf.user_factors,
        user_index=mf.user_index,
        pairs=holdout,
        train=train,
        reg=reg,
    )
    error_before = heldout_error(mf.item_factors, mf.item_index, before_vectors, holdout, heldout_negatives)

    updated_users, updated_items = _sgd(work, train, params, rng, reg)

    after_vectors = _holdout_vectors(
        work.items,
        work.item_index,
        work_users=work.users,
        user_index=mf.user_index,
        pairs=holdout,
        train=train,
        reg=reg,
    )
    error_after = heldout_error(work.items, work.item_index, after_vectors, holdout, heldout_negatives)
    updated = MatrixFactorisation(
        work.item_ids,
        work.items.astype(np.float32),
        mf.user_ids,
        work.users.astype(np.float32),
        mf.regularisation,
        mf.alpha,
    )
    return OnlineStep(
        updated,
        error_before,
        error_after,
        train_pairs=len(train.users),
        holdout_pairs=len(holdout.users),
        new_items=new_items,
        updated_users=updated_users,
        updated_items=updated_items,
    )


def _sgd(
    work: _Working, pairs: _Pairs, params: OnlineHyperparameters, rng: np.random.Generator, reg: float
) -> tuple[int, int]:
    """Mini-batch SGD on the training pairs; returns how many distinct users and items moved."""
    if not pairs.users:
        return 0, 0
    item_rows = np.array([work.item_index.get(i, -1) for i in pairs.items], dtype=np.int64)
    known = item_rows >= 0
    if not known.any():
        return 0, 0
    user_rows = work.user_rows(pairs.users)[known]
    item_rows = item_rows[known]
    prefs, confs = pairs.prefs[known], pairs.confs[known]
    transient_names = list(work.transient)
    transient = (
        np.array([work.transient[u] for u in transient_names])
        if transient_names
        else np.zeros((0, work.items.shape[1]))
    )
    # One matrix of every user vector the update touches: model users first, then transient ones.
    stored = np.unique(user_rows[user_rows >= 0])
    local = {int(u): n for n, u in enumerate(stored)}
    users = np.vstack([work.users[stored], transient]) if len(stored) else transient.copy()
    rows_local = np.array([local[int(u)] if u >= 0 else len(stored) + (-1 - int(u)) for u in user_rows], dtype=np.int64)
    items = work.items
    lr = params.learning_rate
    count = len(rows_local)
    for _ in range(params.epochs):
        order = rng.permutation(count)
        for start in range(0, count, params.batch_size):
            batch = order[start : start + params.batch_size]
            u, i = rows_local[batch], item_rows[batch]
            negatives = rng.integers(0, len(items), size=(len(batch), params.negatives))
            x, y = users[u], items[i]
            yn = items[negatives]  # (batch, negatives, factors)
            conf = confs[batch]
            err = conf * (prefs[batch] - np.einsum("ij,ij->i", x, y))
            neg_pred = np.einsum("bf,bnf->bn", x, yn)  # negatives: p = 0, c = 1
            grad_u = -err[:, None] * y + np.einsum("bn,bnf->bf", neg_pred, yn) + reg * x
            grad_i = -err[:, None] * x + reg * y
            grad_neg = neg_pred[:, :, None] * x[:, None, :]
            # Each row's curvature in this batch: dividing its step by (1 + lr * curvature) is the implicit
            # (proximal) SGD step, which never overshoots however confident the pair or large the rate.
            x_sq = np.einsum("ij,ij->i", x, x)
            curve_u = np.zeros(len(users))
            np.add.at(curve_u, u, conf * np.einsum("ij,ij->i", y, y) + np.einsum("bnf,bnf->b", yn, yn) + reg)
            step_u = np.zeros_like(users)
            np.add.at(step_u, u, grad_u)
            # Item rows this batch touches, indexed locally (the catalogue may be large).
            touched, local_rows = np.unique(np.concatenate([i, negatives.ravel()]), return_inverse=True)
            pos_local, neg_local = local_rows[: len(i)], local_rows[len(i) :]
            curve_i = np.zeros(len(touched))
            np.add.at(curve_i, pos_local, conf * x_sq + reg)
            np.add.at(curve_i, neg_local, np.repeat(x_sq, negatives.shape[1]))
            step_i = np.zeros((len(touched), items.shape[1]))
            np.add.at(step_i, pos_local, grad_i)
            np.add.at(step_i, neg_local, grad_neg.reshape(-1, items.shape[1]))
            users -= (2 * lr / (1 + 2 * lr * curve_u))[:, None] * step_u
            items[touched] -= (2 * lr / (1 + 2 * lr * curve_i))[:, None] * step_i
    work.users[stored] = users[: len(stored)]
    return len(stored) + len(transient_names), len(np.unique(item_rows))
