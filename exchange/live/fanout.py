"""Synchronous group sends in channels-redis' own format, in a constant number
of Redis round trips however many groups and subscribers there are.

``channel_layer.group_send`` is async and costs four round trips per group;
the matcher sends to a handful of market groups plus one group per user a
batch touched, from a synchronous loop. This module does the same writes as
channels-redis 4 (``RedisChannelLayer.group_send``): read the members of
every group in one Lua call, then one more Lua call that adds, for each receiving
Redis key (one per daphne process: its channels share the process key and
the message lists them in ``__asgi_channel__``), the serialized message to
that key's sorted set unless it is full (capacity: the message is dropped,
as channels-redis does; consumers see a sequence gap and resynchronise).

The serialization, key names, capacities and expiries come from the
configured layer object itself, so they cannot drift from what the daphne
processes read. Only a single-host layer is supported (the platform
configures one); with several hosts, sends go through ``group_send``.
"""

from __future__ import annotations

import functools
import logging
import time

import redis
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

# The members of many groups in one call: [index, members, index, members...]
# for the non-empty groups, after dropping members older than group_expiry.
_MEMBERS_LUA = """
local found = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    local names = redis.call('ZRANGE', KEYS[i], 0, -1)
    if #names > 0 then
        found[#found + 1] = i
        found[#found + 1] = names
    end
end
return found
"""

# As channels-redis' group_send script, with one score per entry so that
# several messages for the same process key keep the order they were given in.
_SEND_LUA = """
local dropped = 0
local n = #KEYS
local expiry = ARGV[3 * n + 1]
for i = 1, n do
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], ARGV[2 * n + i], ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        dropped = dropped + 1
    end
end
return dropped
"""


class GroupSender:
    """Sends messages to channel-layer groups from synchronous code."""

    def __init__(self):
        self.layer = get_channel_layer()
        assert self.layer is not None and getattr(self.layer, "ring_size", 1) == 1, "one Redis host expected"
        self.redis = redis.Redis.from_url(
            settings.REDIS_CHANNELS_URL, socket_timeout=2, socket_connect_timeout=1, health_check_interval=30)
        self._script = self.redis.register_script(_SEND_LUA)
        self._members_script = self.redis.register_script(_MEMBERS_LUA)

    def members(self, groups) -> dict[str, list[str]]:
        """The channels in each group (one call; stale members dropped as
        channels-redis does); groups without members are left out."""
        groups = list(dict.fromkeys(groups))
        if not groups:
            return {}
        stale_before = int(time.time()) - self.layer.group_expiry
        reply = self._members_script(keys=[self.layer._group_key(group) for group in groups], args=[stale_before])
        return {groups[int(index) - 1]: [name.decode() for name in names]
                for index, names in zip(reply[::2], reply[1::2])}

    def send(self, messages: list[tuple[str, dict]], members: dict[str, list[str]]) -> int:
        """Send each ``(group, message)`` to the group's ``members`` (from
        ``members()``), in order, in one round trip. Returns how many
        per-process deliveries were dropped because the receiver was full."""
        keys, payloads, capacities = [], [], []
        layer = self.layer
        for group, message in messages:
            channel_names = members.get(group)
            if not channel_names:
                continue
            _, key_to_message, key_to_capacity = layer._map_channel_keys_to_connection(channel_names, message)
            for key, payload in key_to_message.items():
                keys.append(key)
                payloads.append(payload)
                capacities.append(key_to_capacity[key])
        if not keys:
            return 0
        now = time.time()
        scores = [repr(now + index * 1e-6) for index in range(len(keys))]
        dropped = self._script(keys=keys, args=[*payloads, *capacities, *scores, int(layer.expiry)])
        if dropped:
            logger.info("live messages dropped: receivers over capacity", extra={"dropped": dropped})
        return dropped

    def send_to_groups(self, messages: list[tuple[str, dict]]) -> int:
        """``members()`` then ``send()``: two round trips."""  # noqa: D401
        return self.send(messages, self.members(group for group, _ in messages))


@functools.cache
def group_sender() -> GroupSender:
    """One sender per process (its own Redis connection pool)."""
    return GroupSender()
