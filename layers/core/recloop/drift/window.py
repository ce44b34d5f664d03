"""The live window: a capped uniform sample of each stream of observations, in Redis (Algorithm R, Vitter 1985).

Each reservoir keeps at most `capacity` rows of what it was offered since the window started, every row offered
with the same chance of being kept, whatever the traffic. Offering rows is one script call per request or batch:
the script numbers the rows and draws their slots server-side, so concurrent Lambdas offering rows at once keep
the sample uniform (the script runs atomically; the caller only supplies one uniform number per row, since a
script's own random numbers are not random on every Redis version). The rows and the counter of one reservoir
share a hash tag: one Cluster slot per reservoir.

Reservoirs: `served:<reference version>` (the served stream of one lineage's traffic: the version carrying the
reference and its online children, recloop.drift.lineage; a retrained champion starts from an empty window, and
versions of different lineages do not mix) and `events`. A reservoir not offered anything for `ttl_seconds`
expires. The check starts a new window when it is done (`reset`), so each check reads the traffic since the
previous one.

Serving and event paths use `observe_scored` and `observe_events`, numpy-free except on the served path (the
recommend function has numpy). `sample` and the tests run in the drift check.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recloop.adapters.redis import Keys, RedisClient, queue_script
from recloop.drift.features import MONITORED_FEATURES, FeatureSet, Source

if TYPE_CHECKING:
    import numpy as np

    from recloop.drift.samples import FeatureSample

RESERVOIR_CAPACITY = 5_000
WINDOW_TTL_SECONDS = 14 * 86_400

# KEYS[1]: the reservoir (hash slot -> row), KEYS[2]: rows offered since the window started.
# ARGV[1]: capacity, ARGV[2]: TTL seconds, then one (u, row) pair per row offered, u uniform in [0, 1).
# Row number n (1-based) takes slot n - 1 while the reservoir fills, then slot floor(u * n) if that is below the
# capacity (kept with probability capacity / n, replacing a uniformly chosen row), else it is dropped.
OFFER_ROWS = """
local capacity = tonumber(ARGV[1])
local offered = (#ARGV - 2) / 2
local last = redis.call('INCRBY', KEYS[2], offered)
local n = last - offered
for i = 3, #ARGV, 2 do
  n = n + 1
  local slot = n - 1
  if n > capacity then
    slot = math.floor(tonumber(ARGV[i]) * n)
  end
  if slot < capacity then
    redis.call('HSET', KEYS[1], slot, ARGV[i + 1])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return last
"""

EVENTS_WINDOW = "events"


def served_window(lineage: str) -> str:
    """The served reservoir of a lineage, named by its reference version."""
    return f"{Source.SERVED.value}:{lineage}"


@dataclass(frozen=True)
class WindowSample:
    model_version: str  # the served version the window's traffic is reported under
    sample: FeatureSample
    rows: dict[Source, int]  # rows of each stream in the sample
    observed: dict[Source, int]  # rows each stream offered since the window started


class DriftWindow:
    def __init__(
        self,
        redis_client: RedisClient,
        features: FeatureSet = MONITORED_FEATURES,
        capacity: int = RESERVOIR_CAPACITY,
        ttl_seconds: int = WINDOW_TTL_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("a reservoir keeps at least one row")
        self.redis = redis_client
        self.features = features
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.rng = rng or random.Random()
        self._served_width = len(features.columns(Source.SERVED))
        self._events_width = len(features.columns(Source.EVENTS))
        self._offer = redis_client.register_script(OFFER_ROWS)

    # Offering rows: one round trip (or one command of the caller's pipeline).
    def observe_scored(self, lineage: str, rows: Any, scores: Any, *, pipeline: Any = None) -> None:
        """One recommend request: of the candidates the ranker scored (`rows` in FEATURE_NAMES order, `scores`),
        one drawn uniformly, with its score, into the lineage's served window."""
        if len(rows) == 0:
            return
        chosen = self.rng.randrange(len(rows))
        self.observe_served(lineage, [[*map(float, rows[chosen]), float(scores[chosen])]], pipeline=pipeline)

    def observe_served(self, lineage: str, rows: Sequence[Sequence[float]], *, pipeline: Any = None) -> None:
        """Served rows (the served layout: each row one request's drawn candidate and its score)."""
        import numpy as np

        encoded = []
        for row in rows:
            values = np.asarray(row, dtype=np.float32)
            if values.shape != (self._served_width,):
                raise ValueError(f"a served row has {self._served_width} values, got shape {values.shape}")
            encoded.append(base64.b64encode(values.tobytes()).decode())
        self._offer_rows(served_window(lineage), encoded, pipeline)

    def observe_events(self, rows: Sequence[Sequence[str]], *, pipeline: Any = None) -> None:
        """Event rows (the events layout; `recloop.drift.features.event_row` makes one from an interaction)."""
        encoded = []
        for row in rows:
            if len(row) != self._events_width:
                raise ValueError(f"an event row has {self._events_width} values, got {len(row)}")
            encoded.append(json.dumps([str(value) for value in row], separators=(",", ":")))
        self._offer_rows(EVENTS_WINDOW, encoded, pipeline)

    def _offer_rows(self, window: str, encoded: list[str], pipeline: Any) -> None:
        if not encoded:
            return
        args: list[Any] = [self.capacity, self.ttl_seconds]
        for row in encoded:
            args += [repr(self.rng.random()), row]
        keys = [Keys.drift_reservoir(window), Keys.drift_reservoir_seen(window)]
        if pipeline is None:
            self._offer(keys=keys, args=args)
        else:
            queue_script(pipeline, self._offer, keys, args)

    # Reading and restarting: the drift check.
    def sample(self, lineage: str) -> WindowSample:
        """The window of the lineage's served traffic and of the events, in one round trip."""
        from recloop.drift.samples import sample_from_rows

        pipe = self.redis.pipeline(transaction=False)
        for window in (served_window(lineage), EVENTS_WINDOW):
            pipe.hvals(Keys.drift_reservoir(window))
            pipe.get(Keys.drift_reservoir_seen(window))
        served_raw, served_seen, events_raw, events_seen = pipe.execute()
        served = self._decode_served(served_raw)
        events = [row for row in (self._decode_event(raw) for raw in events_raw) if row is not None]
        return WindowSample(
            model_version=lineage,
            sample=sample_from_rows(self.features, served, events),
            rows={Source.SERVED: len(served), Source.EVENTS: len(events)},
            observed={Source.SERVED: int(served_seen or 0), Source.EVENTS: int(events_seen or 0)},
        )

    def reset(self, lineage: str, sources: Iterable[Source] = tuple(Source)) -> None:
        """Start a new window of `sources` (after a check)."""
        windows = {Source.SERVED: served_window(lineage), Source.EVENTS: EVENTS_WINDOW}
        pipe = self.redis.pipeline(transaction=False)
        for source in sources:
            # One DEL per key: a cluster pipeline refuses a multi-key DEL, even of keys on one slot.
            pipe.delete(Keys.drift_reservoir(windows[source]))
            pipe.delete(Keys.drift_reservoir_seen(windows[source]))
        pipe.execute()

    def _decode_served(self, raw_rows: list[str | bytes]) -> np.ndarray:
        """Rows of another width (written under another feature list) are skipped, not misread."""
        import numpy as np

        width = self._served_width * 4
        decoded = [data for data in (base64.b64decode(raw) for raw in raw_rows) if len(data) == width]
        if not decoded:
            return np.zeros((0, self._served_width), dtype=np.float32)
        return np.frombuffer(b"".join(decoded), dtype=np.float32).reshape(-1, self._served_width)

    def _decode_event(self, raw: str | bytes) -> list[str] | None:
        try:
            row = json.loads(raw)
        except ValueError:
            return None
        return row if isinstance(row, list) and len(row) == self._events_width else None
