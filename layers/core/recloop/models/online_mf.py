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

SGD works on copies of the rows it touches. A kept step is then written into the model passed in, and a
rejected one is undone: at 100k users and items the factor matrices are ~40 MB, and copying them for a new
model would cost more than the step itself. So the model after a kept step is the same object, changed; a
caller that must keep the model as it was copies it first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from recloop.core.events import Interaction
from recloop.models.mf import MatrixFactorisation

# Groups of at most this many rows are folded in through the Woodbury identity (fold_in_many).
WOODBURY_ROWS = 16


@dataclass(frozen=True)
class OnlineHyperparameters:
    batch_size: int = 32
    learning_rate: float = 0.001
    epochs: int = 4
    negatives: int = 4
    holdout_fraction: float = 0.2
    grow_items: bool = True
    seed: int = 29
    tolerance: float = 0.0  # a part is kept if its held-out metric got at most this much worse (relative)
    refit_decay: float = 0.9  # the ranker's leaves (recloop.models.online_ranker)
    attribution_window_seconds: float = 86_400.0  # a positive this long after a served query labels it


@dataclass(frozen=True)
class OnlineStep:
    """What one update produced: the MF after it (the model passed in) and how it did against before."""

    mf: MatrixFactorisation
    error_before: float
    error_after: float
    train_pairs: int
    holdout_pairs: int
    new_items: int
    updated_users: int
    updated_items: int
    heldout_from: float = math.inf  # time of the first held-out event
    tolerance: float = 0.0

    @property
    def improved(self) -> bool:
        """Kept only if the held-out error is finite and not worse than before beyond the tolerance."""
        return bool(math.isfinite(self.error_after) and self.error_after <= self.error_before * (1 + self.tolerance))


@dataclass(frozen=True)
class _Pairs:
    """Events summed per (user, item): preference 1 if the total weight is positive, else 0 (a dislike)."""

    users: list[str]
    items: list[str]
    prefs: np.ndarray
    confs: np.ndarray

    @classmethod
    def of(cls, events: Sequence[Interaction], alpha: float) -> _Pairs:
        weights: dict[tuple[str, str], float] = {}
        for event in events:
            key = (event.user_id, event.item_id)
            weights[key] = weights.get(key, 0.0) + event.weight
        kept = [(key, w) for key, w in weights.items() if w != 0]
        total = np.array([w for _, w in kept], dtype=np.float64)
        return cls([u for (u, _), _ in kept], [i for (_, i), _ in kept], (total > 0) * 1.0, 1.0 + alpha * np.abs(total))


def fold_in_many(
    gram: np.ndarray,
    rows: np.ndarray,
    prefs: np.ndarray,
    confs: np.ndarray,
    *,
    groups: np.ndarray,
    count: int,
    reg: float,
) -> np.ndarray:
    """The solve of `_solve_one` for many vectors at once: rows[n] (the other side's factors) belongs to
    vector groups[n]; a group with no row gets the zero vector.

    Each vector solves (A + Y^T Y) x = r with A = gram + reg I shared and Y its group's rows scaled by
    sqrt(c - 1). A buffer's groups are mostly one or two rows, so x comes from A's inverse by the Woodbury
    identity, x = u - V^T (I + V Y^T)^-1 Y u with u = A^-1 r and V = Y A^-1, at the cost of a k x k solve per
    group of k rows instead of a factors x factors one; groups longer than WOODBURY_ROWS are solved directly.
    """
    factors = gram.shape[0]
    out = np.zeros((count, factors))
    if len(rows) == 0:
        return out
    order = np.argsort(groups, kind="stable")
    rows, prefs, confs, groups = rows[order], prefs[order], confs[order], groups[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[starts, len(groups)])
    scaled = rows * np.sqrt(confs - 1.0)[:, None]  # so that scaled^T scaled = rows^T diag(c - 1) rows
    rhs = np.add.reduceat(rows * (confs * prefs)[:, None], starts, axis=0)
    shared = gram + reg * np.eye(factors)
    short = sizes <= WOODBURY_ROWS
    if short.any():
        owner = np.repeat(np.arange(len(starts)), sizes)
        take = short[owner]
        position = np.arange(len(rows)) - starts[owner]
        group_rows = np.zeros((int(short.sum()), int(sizes[short].max()), factors))  # padded with zero rows
        group_rows[np.cumsum(short)[owner[take]] - 1, position[take]] = scaled[take]
        inverse = np.linalg.inv(shared)
        u = rhs[short] @ inverse
        v = group_rows @ inverse
        capacitance = np.eye(group_rows.shape[1]) + v @ group_rows.transpose(0, 2, 1)
        w = np.linalg.solve(capacitance, group_rows @ u[:, :, None])
        out[groups[starts[short]]] = u - (v.transpose(0, 2, 1) @ w)[:, :, 0]
    for n in np.flatnonzero(~short):
        block = scaled[starts[n] : starts[n] + sizes[n]]
        out[groups[starts[n]]] = np.linalg.solve(shared + block.T @ block, rhs[n])
    return out


def update_mf(
    mf: MatrixFactorisation, events: Sequence[Interaction], params: OnlineHyperparameters = OnlineHyperparameters()
) -> OnlineStep:
    """One online update of `mf` from `events` (oldest first), written into `mf` only if it is kept."""
    ordered = sorted(events, key=lambda e: e.timestamp)
    held = max(1, round(len(ordered) * params.holdout_fraction)) if len(ordered) > 1 else 0
    train = _Pairs.of(ordered[: len(ordered) - held], mf.alpha)
    holdout = _Pairs.of(ordered[len(ordered) - held :], mf.alpha)
    heldout_from = ordered[len(ordered) - held].timestamp if held else math.inf
    with np.errstate(all="ignore"):  # a diverging step shows as a non-finite held-out error, not a warning
        step = _Update(mf, train, holdout, params).run()
    return replace(step, heldout_from=heldout_from)


class _Update:
    """The update's working state. Item indices: the model's rows, then new items appended after them."""

    def __init__(self, mf: MatrixFactorisation, train: _Pairs, holdout: _Pairs, params: OnlineHyperparameters) -> None:
        self.mf, self.train, self.holdout, self.params = mf, train, holdout, params
        self.reg = mf.regularisation
        self.rng = np.random.default_rng(params.seed)
        self.known_items = len(mf.item_ids)

    def run(self) -> OnlineStep:
        mf, train = self.mf, self.train
        # Users of the training part: the model's rows, or a transient vector folded in from their pairs.
        self.new_users = sorted({u for u in train.users if u not in mf.user_index})
        new_user_index = {u: n for n, u in enumerate(self.new_users)}
        user_rows = np.array(
            [mf.user_index[u] if u in mf.user_index else -1 - new_user_index[u] for u in train.users], dtype=np.int64
        )
        item_rows = np.array([mf.item_index.get(i, -1) for i in train.items], dtype=np.int64)
        transient = self._fold_in(
            mf.item_factors, mf.item_gram, train, user_rows=user_rows, item_rows=item_rows, count=len(self.new_users)
        )
        new_items, new_vectors = _grow_items(
            mf, train, self.params, user_rows=user_rows, item_rows=item_rows, transient=transient
        )
        new_index = {item: self.known_items + n for n, item in enumerate(new_items)}
        item_rows = np.array([mf.item_index.get(i, new_index.get(i, -1)) for i in train.items], dtype=np.int64)

        negatives_heldout = self.rng.integers(
            0, max(self.known_items, 1), size=(len(self.holdout.users), self.params.negatives)
        )
        error_before = _heldout_error(mf, train, self.holdout, negatives_heldout, self.reg)

        items_after, users_after, moved_users, moved_items = self._sgd(user_rows, item_rows, transient, new_vectors)
        undo = _write_step(
            mf,
            self.known_items,
            new_items=new_items,
            new_vectors=new_vectors,
            items_after=items_after,
            users_after=users_after,
        )
        try:
            error_after = _heldout_error(mf, train, self.holdout, negatives_heldout, self.reg)
        except BaseException:
            undo()
            raise
        step = OnlineStep(
            mf,
            error_before,
            error_after,
            train_pairs=len(train.users),
            holdout_pairs=len(self.holdout.users),
            new_items=len(new_items),
            updated_users=moved_users,
            updated_items=moved_items,
            tolerance=self.params.tolerance,
        )
        if not step.improved:
            undo()
        return step

    def _fold_in(
        self,
        item_factors: np.ndarray,
        item_gram: np.ndarray,
        pairs: _Pairs,
        *,
        user_rows: np.ndarray,
        item_rows: np.ndarray,
        count: int,
    ) -> np.ndarray:
        """Vectors of users new to the model (user_rows < 0) from their pairs on items the model knows."""
        use = (user_rows < 0) & (item_rows >= 0)
        return fold_in_many(
            item_gram,
            item_factors[item_rows[use]].astype(np.float64),
            pairs.prefs[use],
            pairs.confs[use],
            groups=-1 - user_rows[use],
            count=count,
            reg=self.reg,
        )

    def _sgd(
        self, user_rows: np.ndarray, item_rows: np.ndarray, transient: np.ndarray, new_vectors: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int, int]:
        """Mini-batch SGD on local copies of the rows it touches; returns (rows, vectors) of items and users."""
        params, train, mf = self.params, self.train, self.mf
        keep = np.flatnonzero(item_rows >= 0)
        epochs = params.epochs if len(keep) else 0
        catalogue = self.known_items + len(new_vectors)
        negatives = self.rng.integers(0, max(catalogue, 1), size=(epochs, len(keep), params.negatives))
        # One local matrix (float64) of the touched rows, users first and then items, mapped back at the end.
        users_touched, users_local = np.unique(user_rows[keep], return_inverse=True)
        items_touched, items_local = np.unique(
            np.concatenate([item_rows[keep], negatives.ravel()]), return_inverse=True
        )
        items_local += len(users_touched)
        pos_items = items_local[: len(keep)]
        neg_items = items_local[len(keep) :].reshape(negatives.shape)
        vectors = np.empty((len(users_touched) + len(items_touched), mf.factors))
        users, items = vectors[: len(users_touched)], vectors[len(users_touched) :]
        stored = users_touched >= 0
        users[stored] = mf.user_factors[users_touched[stored]]
        users[~stored] = transient[-1 - users_touched[~stored]]
        old = items_touched < self.known_items
        items[old] = mf.item_factors[items_touched[old]]
        items[~old] = new_vectors[items_touched[~old] - self.known_items]
        prefs, confs = train.prefs[keep], train.confs[keep]
        for epoch in range(epochs):
            order = self.rng.permutation(len(keep))
            batch_of = np.arange(len(keep)) // params.batch_size
            u, i, negs = users_local[order], pos_items[order], neg_items[epoch, order]
            batches = _BatchRows(batch_of, users=u, items=i, negatives=negs, rows=len(vectors), width=mf.factors + 1)
            epoch_prefs, epoch_confs = prefs[order], confs[order]
            for b, start in enumerate(range(0, len(keep), params.batch_size)):
                batch = slice(start, start + params.batch_size)
                _sgd_step(
                    vectors,
                    *batches.of(b),
                    size=min(params.batch_size, len(keep) - start),
                    negatives=params.negatives,
                    prefs=epoch_prefs[batch],
                    confs=epoch_confs[batch],
                    lr=params.learning_rate,
                    reg=self.reg,
                )
        return (
            (items_touched, items),
            (users_touched[stored], users[stored]),
            len(users_touched),
            len(np.unique(item_rows[keep])),
        )


def _grow_items(
    mf: MatrixFactorisation,
    train: _Pairs,
    params: OnlineHyperparameters,
    *,
    user_rows: np.ndarray,
    item_rows: np.ndarray,
    transient: np.ndarray,
) -> tuple[list[str], np.ndarray]:
    """Vectors for items new to the model, solved from the vectors of the users who interacted with them."""
    factors = mf.factors
    if not params.grow_items or not (item_rows < 0).any():
        return [], np.zeros((0, factors))
    pick = np.flatnonzero(item_rows < 0)
    new_items = sorted({train.items[n] for n in pick})
    position = {item: n for n, item in enumerate(new_items)}
    groups = np.array([position[train.items[n]] for n in pick], dtype=np.int64)
    users = user_rows[pick]
    vectors = np.where(
        (users >= 0)[:, None],
        mf.user_factors[np.maximum(users, 0)],
        transient[np.maximum(-1 - users, 0)] if len(transient) else 0.0,
    ).astype(np.float64)
    solved = fold_in_many(
        mf.user_gram,
        vectors,
        train.prefs[pick],
        train.confs[pick],
        groups=groups,
        count=len(new_items),
        reg=mf.regularisation,
    )
    return new_items, solved


def _write_step(
    mf: MatrixFactorisation,
    known_items: int,
    *,
    new_items: list[str],
    new_vectors: np.ndarray,
    items_after: tuple[np.ndarray, np.ndarray],
    users_after: tuple[np.ndarray, np.ndarray],
) -> Callable[[], None]:
    """Writes the step into the model: new items appended, moved rows replaced, Grams updated by the rows
    that changed only (the catalogue may be large). Returns what undoes it."""
    rows, vectors = items_after
    old_rows = rows[rows < known_items]
    user_rows, user_vectors = users_after
    saved_items, saved_users = mf.item_factors[old_rows], mf.user_factors[user_rows]  # copies (fancy index)
    item_gram, user_gram = mf.item_gram, mf.user_gram
    mf.append_items(new_items, new_vectors)
    mf.item_factors[rows] = vectors
    mf.user_factors[user_rows] = user_vectors
    before, after = saved_items.astype(np.float64), mf.item_factors[rows].astype(np.float64)  # new items too
    new_item_gram = item_gram - before.T @ before + after.T @ after
    before, after = saved_users.astype(np.float64), mf.user_factors[user_rows].astype(np.float64)
    mf.set_grams(new_item_gram, user_gram - before.T @ before + after.T @ after)

    def undo() -> None:
        mf.item_factors[old_rows] = saved_items
        mf.user_factors[user_rows] = saved_users
        mf.truncate_items(known_items)
        mf.set_grams(item_gram, user_gram)

    return undo


def _heldout_error(
    model: MatrixFactorisation, train: _Pairs, holdout: _Pairs, negatives: np.ndarray, reg: float
) -> float:
    """Mean of c * (p - x.y)^2 over held-out pairs and their negatives (p = 0, c = 1). A user the model
    does not know is folded in from the training part, as serving would; unknown users or items predict 0."""
    if not holdout.users:
        return 0.0
    unknown = sorted({u for u in holdout.users if u not in model.user_index})
    position = {u: n for n, u in enumerate(unknown)}
    rows = [n for n, u in enumerate(train.users) if u in position and train.items[n] in model.item_index]
    folded = fold_in_many(
        model.item_gram,
        model.item_factors[[model.item_index[train.items[n]] for n in rows]]
        .astype(np.float64)
        .reshape(-1, model.factors),
        train.prefs[rows],
        train.confs[rows],
        groups=np.array([position[train.users[n]] for n in rows], dtype=np.int64),
        count=len(unknown),
        reg=reg,
    )
    vectors = np.array(
        [
            model.user_factors[model.user_index[u]] if u in model.user_index else folded[position[u]]
            for u in holdout.users
        ]
    )
    item_rows = np.array([model.item_index.get(i, -1) for i in holdout.items], dtype=np.int64)
    known = item_rows >= 0
    predicted = np.zeros(len(holdout.users))
    predicted[known] = np.einsum("ij,ij->i", vectors[known], model.item_factors[item_rows[known]])
    negative_scores = np.einsum("bf,bnf->bn", vectors, model.item_factors[negatives])
    total = float(np.sum(holdout.confs * (holdout.prefs - predicted) ** 2) + np.sum(negative_scores**2))
    return total / (len(holdout.users) * (1 + negatives.shape[1]))


class _BatchRows:
    """Each mini-batch's rows of the local matrix, found for a whole epoch in one np.unique.

    A batch reads rows in the order users, positive items, negatives (pairs x n, flattened); its step needs
    the distinct rows (sorted) and, for every row read, the position of its (gradient, curvature) terms in the
    flattened (distinct rows x width) sums, which one np.bincount then adds up.
    """

    def __init__(
        self,
        batch_of: np.ndarray,
        *,
        users: np.ndarray,
        items: np.ndarray,
        negatives: np.ndarray,
        rows: int,
        width: int,
    ) -> None:
        pairs, extra = len(users), negatives.shape[1]
        owner = np.concatenate([batch_of, batch_of, np.repeat(batch_of, extra)])
        read = np.concatenate([users, items, negatives.ravel()])
        distinct, inverse = np.unique(owner * rows + read, return_inverse=True)
        batches = int(batch_of[-1]) + 1 if pairs else 0
        self.starts = np.searchsorted(distinct, np.arange(batches + 1) * rows)
        self.distinct = distinct - np.repeat(np.arange(batches) * rows, np.diff(self.starts))
        local = inverse - self.starts[owner]
        # Reads grouped by batch (users, items, negatives within each), so that a batch's are one slice.
        by_batch = np.argsort(owner, kind="stable")
        self.read = read[by_batch]
        self.terms = (local[by_batch, None] * width + np.arange(width)).reshape(len(read), width)
        self.read_bounds = np.searchsorted(owner[by_batch], np.arange(batches + 1))

    def of(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows read: users, items, negatives; the batch's distinct rows; where each read's terms sum)"""
        a, b = self.read_bounds[batch], self.read_bounds[batch + 1]
        touched = self.distinct[self.starts[batch] : self.starts[batch + 1]]
        return self.read[a:b], touched, self.terms[a:b].ravel()


def _sgd_step(
    vectors: np.ndarray,
    read: np.ndarray,
    touched: np.ndarray,
    terms: np.ndarray,
    *,
    size: int,
    negatives: int,
    prefs: np.ndarray,
    confs: np.ndarray,
    lr: float,
    reg: float,
) -> None:
    """One mini-batch step, in place, on the local matrix of user and item rows (_BatchRows gives what the
    batch reads and where its terms sum). Each row's step is divided by (1 + 2 lr * its curvature in the
    batch): the implicit (proximal) SGD step, which never overshoots however confident the pair or large the
    rate."""
    factors, n = vectors.shape[1], negatives
    rows = vectors[read]
    x, y, yn = rows[:size], rows[size : 2 * size], rows[2 * size :].reshape(size, n, factors)
    err = confs * (prefs - np.einsum("ij,ij->i", x, y))
    neg_pred = np.einsum("bf,bnf->bn", x, yn)
    x_sq = np.einsum("ij,ij->i", x, x)
    # Each row read contributes a gradient term and a curvature term: users, positive items, negatives.
    contributions = np.empty((len(read), factors + 1))
    contributions[:size, :factors] = -err[:, None] * y + np.einsum("bn,bnf->bf", neg_pred, yn) + reg * x
    contributions[:size, factors] = confs * np.einsum("ij,ij->i", y, y) + np.einsum("bnf,bnf->b", yn, yn) + reg
    contributions[size : 2 * size, :factors] = -err[:, None] * x + reg * y
    contributions[size : 2 * size, factors] = confs * x_sq + reg
    contributions[2 * size :, :factors] = (neg_pred[:, :, None] * x[:, None, :]).reshape(-1, factors)
    contributions[2 * size :, factors] = np.repeat(x_sq, n)
    sums = np.bincount(terms, contributions.ravel(), minlength=len(touched) * (factors + 1))
    sums = sums.reshape(len(touched), factors + 1)
    vectors[touched] -= (2 * lr / (1 + 2 * lr * sums[:, factors]))[:, None] * sums[:, :factors]
