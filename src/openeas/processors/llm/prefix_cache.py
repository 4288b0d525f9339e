"""The prefix cache of the llama.cpp batch engine: finished sequences whose KV cells are kept.

A sequence that ends (finished, stopped, or its client hung up) leaves its evaluated tokens in the
KV cache under its sequence id; this cache remembers those ids by their token lists, so that a
later request whose prompt starts with the same tokens (a system prompt, a chat history) copies
the cells (`llama_memory_seq_cp`, which in a unified KV cache only tags the same cells with one
more sequence id) instead of computing them again. It is bounded in tokens and in entries and
evicts the least recently used entry; the engine frees the evicted ids' cells. An entry first
lives in the finished sequence's slot and moves to a spare id (`move`) when a newcomer needs the
slot (batching.py says why). Pure bookkeeping,
no llama.cpp calls, so it is tested on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

_CHUNK = 64  # compare token lists slice by slice (C speed), then token by token in the last slice


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i + _CHUNK <= n and a[i : i + _CHUNK] == b[i : i + _CHUNK]:
        i += _CHUNK
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Sequence id -> the tokens its KV cells hold, least recently used first."""

    def __init__(self, max_tokens: int, max_entries: int) -> None:
        if max_tokens < 0 or max_entries < 0:
            raise ValueError("prefix cache bounds must be >= 0")
        self.max_tokens = max_tokens
        self.max_entries = max_entries
        self._entries: OrderedDict[int, list[int]] = OrderedDict()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, seq_id: object) -> bool:
        return seq_id in self._entries

    @property
    def tokens(self) -> int:
        """Tokens held (counted per entry: cells shared by two entries count twice)."""
        return self._tokens

    def best(self, prompt: Sequence[int]) -> tuple[int, int]:
        """(sequence id, shared length) of the entry sharing the longest prefix; (-1, 0) if none."""
        best_id, best_len = -1, 0
        for seq_id, tokens in self._entries.items():
            n = common_prefix(prompt, tokens)
            if n > best_len:
                best_id, best_len = seq_id, n
        return best_id, best_len

    def touch(self, seq_id: int) -> None:
        self._entries.move_to_end(seq_id)

    def add(self, seq_id: int, tokens: list[int]) -> list[int]:
        """Keep `seq_id`'s cells; returns the ids whose cells the caller must now free.

        A new entry that an existing one already contains is dropped (its own id is returned);
        existing entries the new one contains are dropped; then the least recently used go
        until the bounds hold.
        """
        if not tokens or len(tokens) > self.max_tokens or self.max_entries == 0:
            return [seq_id]
        freed: list[int] = []
        for other, held in list(self._entries.items()):
            shared = common_prefix(tokens, held)
            if shared == len(tokens):  # the new one is a prefix of (or equal to) one we have
                self._entries.move_to_end(other)
                return [seq_id]
            if shared == len(held):  # an old one is a prefix of the new one
                freed.append(self._drop(other))
        self._entries[seq_id] = tokens
        self._tokens += len(tokens)
        while self._tokens > self.max_tokens or len(self._entries) > self.max_entries:
            lru = self.pop_lru()
            assert lru is not None
            freed.append(lru)
        return freed

    def take(self, seq_id: int) -> list[int]:
        """Forget `seq_id`'s entry (its cells are about to be reused); returns its tokens."""
        tokens = self._entries.pop(seq_id)
        self._tokens -= len(tokens)
        return tokens

    def move(self, seq_id: int, to: int) -> list[int]:
        """The entry's cells go to sequence id `to`: same tokens, same place in the LRU order.
        Returns the tokens."""
        tokens = self._entries[seq_id]
        self._entries = OrderedDict((to if k == seq_id else k, v) for k, v in self._entries.items())
        return tokens

    def pop_lru(self) -> int | None:
        """Drop the least recently used entry; returns its id (None when empty)."""
        if not self._entries:
            return None
        return self._drop(next(iter(self._entries)))

    def _drop(self, seq_id: int) -> int:
        self.take(seq_id)
        return seq_id
