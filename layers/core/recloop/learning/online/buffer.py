"""The online-learning buffer: stream records waiting for the next update, in a Redis list.

The stream consumer appends each record once (its sequence number is claimed in the same script); an update reads
from the head and drops what it used only after publishing, so a failure leaves the events for the retry.
"""

from __future__ import annotations

from recloop.adapters.redis import Keys, RedisClient
from recloop.core.events import Interaction

BUFFER_SEEN_TTL_SECONDS = 7 * 86_400
# Claim the sequence number and append in one step (both keys share the {olb} slot: cluster-safe).
BUFFER_ONCE = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[2]) then
  return redis.call('RPUSH', KEYS[2], ARGV[1])
end
return 0
"""


class OnlineBuffer:
    def __init__(self, redis_client: RedisClient) -> None:
        self.redis = redis_client
        self._append_once = redis_client.register_script(BUFFER_ONCE)

    def append_once(self, shard_id: str, sequence_number: str, event: Interaction) -> None:
        """Buffer a stream record unless this shard's sequence number was buffered before."""
        seen = Keys.online_buffer_seen(shard_id, sequence_number)
        self._append_once(keys=[seen, Keys.ONLINE_BUFFER], args=[event.to_record(), BUFFER_SEEN_TTL_SECONDS])

    def size(self) -> int:
        return int(self.redis.llen(Keys.ONLINE_BUFFER))

    def oldest(self, count: int) -> list[Interaction]:
        """Up to `count` events from the head, oldest first."""
        raw = self.redis.lrange(Keys.ONLINE_BUFFER, 0, count - 1)
        return [Interaction.model_validate_json(line) for line in raw]

    def drop_oldest(self, count: int) -> None:
        self.redis.ltrim(Keys.ONLINE_BUFFER, count, -1)
