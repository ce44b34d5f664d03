"""The ranker's features as they were when a recommendation was served, for the online ranker refit.

A ranker can only learn from features as they were *before* the outcome, and the feature store keeps only
the present. So the recommend path logs the rows the ranker scored (its best LOGGED_TOP candidates plus
LOGGED_RANDOM others, to show it what it ranked low) with the user and time, into a capped Redis list.
The online update joins them with the buffered events: a logged candidate the user then had a positive
event with, within the attribution window, is a relevant item of that query.
"""

from __future__ import annotations

import base64
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from recloop.core.events import POSITIVE_EVENTS, Interaction, K

if TYPE_CHECKING:
    from recloop.models.online_ranker import LabelledQueries
LOGGED_TOP = 40
LOGGED_RANDOM = 20


@dataclass(frozen=True)
class ServedFeatures:
    user_id: str
    ts: float
    model_version: str
    items: tuple[str, ...]
    rows: Any  # np.ndarray (len(items), features) float32

    @classmethod
    def select(
        cls, user_id: str, ts: float, model_version: str, *, items: Sequence[str], rows: Any, scores: Any
    ) -> ServedFeatures:
        """The best LOGGED_TOP by score and LOGGED_RANDOM of the rest, so the log stays small."""
        import numpy as np

        order = np.argsort(-np.asarray(scores), kind="stable")
        top, rest = order[:LOGGED_TOP], order[LOGGED_TOP:]
        if len(rest) > LOGGED_RANDOM:
            rest = np.sort(np.array(random.sample(rest.tolist(), LOGGED_RANDOM), dtype=np.int64))
        chosen = np.concatenate([top, rest]).astype(np.int64)
        return cls(user_id, ts, model_version, tuple(items[n] for n in chosen.tolist()), np.asarray(rows)[chosen])

    def encode(self) -> bytes:
        import numpy as np

        rows = np.ascontiguousarray(self.rows, dtype=np.float32)
        return json.dumps(
            {
                "u": self.user_id,
                "t": self.ts,
                "v": self.model_version,
                "i": list(self.items),
                "w": rows.shape[1],
                "r": base64.b64encode(rows.tobytes()).decode(),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> ServedFeatures:
        import numpy as np

        data = json.loads(raw)
        rows = np.frombuffer(base64.b64decode(data["r"]), dtype=np.float32).reshape(-1, int(data["w"]))
        return cls(data["u"], float(data["t"]), data["v"], tuple(data["i"]), rows)


class ServedHits(NamedTuple):
    """The live hit rate of served lists over a batch of events: of the positive events that followed a logged
    recommendation to the same user within the attribution window (`judged`), how many were of an item among that
    recommendation's K best-scored candidates (`hits`). The replay's HR@10, measured on live traffic."""

    judged: int = 0
    hits: int = 0


def served_hits(
    served_newest_first: Iterable[ServedFeatures], events: Sequence[Interaction], window_seconds: float, k: int = K
) -> ServedHits:
    """Each positive event judged against the user's latest logged recommendation before it, within the window.
    The log is read newest first, no further back than the window before the oldest positive event."""
    positives = [event for event in events if event.event_type in POSITIVE_EVENTS]
    if not positives:
        return ServedHits()
    oldest_useful = min(event.timestamp for event in positives) - window_seconds
    by_user: dict[str, list[ServedFeatures]] = {}  # each user's logged recommendations, newest first
    wanted = {event.user_id for event in positives}
    for query in served_newest_first:
        if query.ts < oldest_useful:
            break
        if query.user_id in wanted:
            by_user.setdefault(query.user_id, []).append(query)
    judged = hits = 0
    for event in positives:
        latest = next(
            (q for q in by_user.get(event.user_id, ()) if event.timestamp - window_seconds <= q.ts <= event.timestamp),
            None,
        )
        if latest is not None:
            judged += 1
            hits += event.item_id in latest.items[:k]  # logged best-first: the first K are the ranker's top K
    return ServedHits(judged, hits)


def labelled_queries(
    served_newest_first: Iterable[ServedFeatures],
    events: Sequence[Interaction],
    window_seconds: float,
    *,
    split_at: float = math.inf,
    per_side: int | None = None,
) -> LabelledQueries:
    """Served queries with at least one relevant and one other item, oldest first: the refit's data.

    The log is read newest first and only as far as it must be (it holds thousands of records, ~5 KB each):
    at most `per_side` labelled queries served from `split_at` on (held out) and as many before it (training),
    and never past the queries served too long before the first event for any event to label them.
    """
    import numpy as np

    from recloop.models.online_ranker import LabelledQueries

    positives: dict[str, list[tuple[float, str]]] = {}
    for event in events:
        if event.event_type in POSITIVE_EVENTS:
            positives.setdefault(event.user_id, []).append((event.timestamp, event.item_id))
    oldest_useful = min((e.timestamp for e in events), default=math.inf) - window_seconds
    limit = math.inf if per_side is None else per_side
    kept: list[tuple[ServedFeatures, Any]] = []
    train = heldout = 0
    for query in served_newest_first:
        if query.ts < oldest_useful or train >= limit:
            break
        later = {item for t, item in positives.get(query.user_id, ()) if query.ts <= t <= query.ts + window_seconds}
        if not later or (query.ts >= split_at and heldout >= limit):
            continue
        hits = [n for n, item in enumerate(query.items) if item in later]
        if 0 < len(hits) < len(query.items):
            relevant = np.zeros(len(query.items), dtype=np.float32)
            relevant[hits] = 1.0
            kept.append((query, relevant))
            if query.ts >= split_at:
                heldout += 1
            else:
                train += 1
    if not kept:
        return LabelledQueries(np.zeros((0, 0), np.float32), np.zeros(0, np.float32), [], [])
    kept.reverse()
    return LabelledQueries(
        np.vstack([np.asarray(q.rows, dtype=np.float32) for q, _ in kept]),
        np.concatenate([labels for _, labels in kept]),
        [len(labels) for _, labels in kept],
        [q.ts for q, _ in kept],
    )
