"""The online-learning buffer: stream events waiting for the next update, in a Redis list.

- Each event enters once: its event id is claimed in the same script that appends it, so a stream redelivery or
  a client's retry put on the stream again (same event id, new sequence number) is buffered once.
- Each entry carries a sequence number of this buffer, increasing. An update publishes, with its model version,
  the sequence it consumed through (`OnlinePosition`; its `buffer_id` tells buffers apart, as a Redis that lost
  its data starts a new buffer whose sequence numbers restart), and the buffer drops entries only up to a
  position; so an
  update retried after its publication (trimming failed, the Lambda timed out) skips what the champion has
  already learned instead of learning it twice.
- The buffer is bounded (Settings.buffer_limit): past it, the oldest entries are dropped and counted
  (`dropped`); online learning then sees the newest events, and the archive keeps every event for retraining.

All keys share the {olb} slot, so each script runs on one node of a cluster.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recloop.adapters.redis import Keys, RedisClient, queue_script
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.models.bundle import OnlinePosition

# KEYS: event claim, buffer, sequence counter, stats. ARGV: record, claim TTL, limit.
APPEND_ONCE = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[2]) then
  return 0
end
local sequence = redis.call('INCR', KEYS[3])
local length = redis.call('RPUSH', KEYS[2], sequence .. ' ' .. ARGV[1])
local over = length - tonumber(ARGV[3])
if over > 0 then
  redis.call('LTRIM', KEYS[2], over, -1)
  redis.call('HINCRBY', KEYS[4], 'dropped', over)
end
return sequence
"""
# KEYS: buffer, consumed marker. ARGV: sequence. Drop head entries up to it; the marker only moves forward.
TRIM_THROUGH = """
local through = tonumber(ARGV[1])
local dropped = 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(string.match(head, '^(%d+) ')) > through then break end
  redis.call('LPOP', KEYS[1])
  dropped = dropped + 1
end
if through > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], through)
end
return dropped
"""


@dataclass(frozen=True)
class BufferedEvent:
    sequence: int
    event: Interaction


class OnlineBuffer:
    def __init__(self, redis_client: RedisClient, settings: Settings) -> None:
        self.redis = redis_client
        self.limit = settings.buffer_limit
        # Remembered as long as a repeat may arrive: the de-duplication window.
        self.claim_seconds = settings.deduplication_seconds
        self._append_once = redis_client.register_script(APPEND_ONCE)
        self._trim_through = redis_client.register_script(TRIM_THROUGH)

    def append_once(self, event: Interaction) -> int:
        """Buffer an event unless its id was buffered before; its sequence number, or 0 for a repeat."""
        keys, args = self._append_arguments(event)
        return int(self._append_once(keys=keys, args=args))

    def append_many(self, events: Sequence[Interaction]) -> list[int]:
        """`append_once` for each event in order, in one round trip (a stream batch's): one answer per event."""
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            queue_script(pipe, self._append_once, *self._append_arguments(event))
        return [int(sequence) for sequence in pipe.execute()] if events else []

    def _append_arguments(self, event: Interaction) -> tuple[list[str], list[Any]]:
        keys = [Keys.online_buffer_event(event.event_id), Keys.ONLINE_BUFFER, Keys.ONLINE_SEQUENCE, Keys.ONLINE_STATS]
        return keys, [event.to_record(), self.claim_seconds, self.limit]

    def size(self) -> int:
        return int(self.redis.llen(Keys.ONLINE_BUFFER))

    def oldest(self, count: int) -> list[BufferedEvent]:
        """Up to `count` events from the head, oldest first."""
        entries = []
        for raw in self.redis.lrange(Keys.ONLINE_BUFFER, 0, count - 1):
            sequence, record = raw.split(" ", 1)
            entries.append(BufferedEvent(int(sequence), Interaction.model_validate_json(record)))
        return entries

    def buffer_id(self) -> str:
        """This buffer's identity, made by the first process that asks."""
        self.redis.set(Keys.ONLINE_BUFFER_ID, secrets.token_hex(8), nx=True)
        return str(self.redis.get(Keys.ONLINE_BUFFER_ID))

    def position(self, sequence: int) -> OnlinePosition:
        return OnlinePosition(buffer_id=self.buffer_id(), sequence=sequence)

    def consumed_through(self, published: OnlinePosition | None = None) -> int:
        """The sequence up to which events were learned: the buffer's marker, or a published position of this
        buffer if it is further (an update that published but did not get to trim)."""
        marker = int(self.redis.get(Keys.ONLINE_CONSUMED) or 0)
        if published is not None and published.buffer_id == self.buffer_id():
            return max(marker, published.sequence)
        return marker

    def trim_through(self, sequence: int) -> int:
        """Drop the entries up to `sequence` and record it as consumed; how many were dropped."""
        return int(self._trim_through(keys=[Keys.ONLINE_BUFFER, Keys.ONLINE_CONSUMED], args=[sequence]))

    def dropped(self) -> int:
        """Entries dropped because the buffer was full."""
        return int(self.redis.hget(Keys.ONLINE_STATS, "dropped") or 0)
