"""Continuous batching on llama.cpp: one model, one context, many sequences decoded together.

Why: one llama.cpp context per concurrent request (the old `n_parallel`) pays a whole model
context per user and decodes them one after another; a decode step of 16 tokens costs little
more than a step of one on a CPU (the weights are read once per step), so decoding all running
sequences in one batch multiplies throughput.

How: a scheduler thread owns the context. Each step it builds one `llama_batch`:
- every decoding sequence contributes its last sampled token (one logit row each);
- sequences still reading their prompt contribute a chunk of it, at most `prefill_chunk` tokens
  per step while others are decoding (so a newcomer's long prompt does not stall their token
  streams for long), up to `n_batch` when nobody is;
then `llama_decode`, then one sampler per sequence picks its next token from its logit row.
Newcomers join between steps; sequences that end (EOG, max_tokens, context full, stop string
seen by the reader, client gone) leave at the next step boundary and their cells are kept in
the prefix cache (prefix_cache.py) or freed.

Sequence ids: running sequences hold the slots 0..n_parallel-1, a newcomer the lowest free slot,
and each step's batch lists them in slot order. With a KV stream per sequence llama.cpp puts in
one pass over the weights (a ubatch) only sequences with consecutive, increasing ids; any other
order split a 16-sequence step into several passes (16 sequences in a shuffled order decoded at
0.65x the tokens/s of the same 16 in order). A finished sequence's cells stay in its slot as a
prefix-cache entry; when a newcomer needs that slot for another prompt, the entry moves to one
of `prefix_cache_entries` spare ids (a stream copy). So a chat's next turn, which lands in the
slot its history is in, reuses it without a copy.

The KV cache is split into one stream per sequence id (`kv_unified` false, the default): each
running sequence and each cached prefix owns `n_ctx` cells, and attention of a sequence reads only
its own stream. That makes a sequence's logits bit-identical whatever else is in the batch (the
CPU matrix products are row-independent; a unified cache's attention was not: greedy answers
drifted at near-ties when batched). A prompt prefix is reused by copying the source stream
(`llama_memory_seq_cp` over the whole stream, then the tail past the prefix is removed): a
memory copy of n_ctx cells, far cheaper than computing the prefix. With `kv_unified` true all
sequences share one pool of `n_ctx * n_parallel + prefix_cache_tokens` cells and a copied prefix
shares the cells (no copy, less memory) but batched output may differ at numeric near-ties.
A request whose prompt shares a long prefix with a sequence still reading that prefix waits for
it (so eight requests with the same system prompt compute it once, not eight times at once).

Sampling: temperature 0 is greedy (argmax, identical to the same prompt run alone); above 0
each sequence has its own llama.cpp sampler chain (the same order as llama-cpp-python's
`Llama.sample`: penalties, top-k, top-p, min-p, temperature, seeded draw).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from openeas.processors.llm.prefix_cache import PrefixCache, common_prefix
from openeas.processors.llm.sampling import Sampling

log = logging.getLogger("openeas.processors.llm")

# wait for a sequence still computing a shared prefix when it would save at least this many tokens
MIN_SHARED_WAIT = 32
PENALTY_LAST_N = 64  # llama-cpp-python's default window for repetition penalties


@dataclass(frozen=True)
class EngineOptions:
    n_parallel: int  # sequences decoded together
    n_ctx: int  # the most tokens (prompt + completion) of one sequence
    n_batch: int  # the most tokens in one llama_decode call
    prefill_chunk: int  # prompt tokens per step for newcomers while others decode
    prefix_cache_tokens: int  # cells kept for finished sequences' prefixes
    prefix_cache_entries: int
    n_threads: int
    n_threads_batch: int
    flash_attn: bool
    kv_unified: bool = False  # one shared cell pool (less memory) instead of a stream per sequence

    def check(self) -> None:
        for name in ("n_parallel", "n_ctx", "n_batch", "prefill_chunk", "n_threads", "n_threads_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"model_config.{name} must be at least 1, got {getattr(self, name)}")
        if self.prefix_cache_tokens < 0 or self.prefix_cache_entries < 0:
            raise ValueError("model_config.prefix_cache_tokens and prefix_cache_entries must be >= 0")
        if self.n_parallel > self.n_batch:
            raise ValueError(
                "model_config.n_parallel must be at most n_batch (each step holds one token per sequence)"
            )
        if self.n_parallel + self.prefix_cache_entries > 256:  # LLAMA_MAX_SEQ
            raise ValueError("model_config.n_parallel + prefix_cache_entries must be at most 256")


@dataclass(frozen=True)
class EngineStats:
    prompt_tokens_processed: int  # prompt tokens run through the model
    prompt_tokens_reused: int  # prompt tokens whose KV cells were copied from another sequence
    running: int
    waiting: int
    cached_prefixes: int
    cached_prefix_tokens: int


@dataclass(eq=False)
class Generation:
    """One request in the engine. `out` carries token ids, then None (done) or an exception."""

    prompt: list[int]
    sampling: Sampling
    max_tokens: int
    cancel: threading.Event
    out: queue.SimpleQueue[int | BaseException | None] = field(default_factory=queue.SimpleQueue)
    seq_id: int = -1
    cached: list[int] = field(default_factory=list)  # tokens whose KV cells this sequence has
    last: int | None = None  # sampled, not yet evaluated
    generated: int = 0
    sampler: Any = None

    @property
    def prefilling(self) -> bool:
        return self.last is None


class BatchEngine:
    """Owns one llama.cpp context and the thread that decodes all sequences in it."""

    def __init__(self, llama_cpp: Any, internals: Any, model: Any, options: EngineOptions,
                 is_eog: Callable[[int], bool]) -> None:  # fmt: skip
        options.check()
        self._lib = llama_cpp
        self._internals = internals
        self._model = model
        self.options = options
        self._is_eog = is_eog
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(model.vocab))
        params = llama_cpp.llama_context_default_params()
        params.n_batch = params.n_ubatch = options.n_batch  # one ubatch per decode: all or nothing
        params.n_seq_max = options.n_parallel + options.prefix_cache_entries
        params.kv_unified = options.kv_unified
        if options.kv_unified:
            params.n_ctx = options.n_ctx * options.n_parallel + options.prefix_cache_tokens
            cache_tokens = options.prefix_cache_tokens
        else:  # a stream of n_ctx cells per sequence id; a cached prefix fills one stream
            params.n_ctx = options.n_ctx * params.n_seq_max
            cache_tokens = options.n_ctx * options.prefix_cache_entries if options.prefix_cache_tokens else 0
        params.n_threads = options.n_threads
        params.n_threads_batch = options.n_threads_batch
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if options.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.no_perf = True
        self._ctx = internals.LlamaContext(model=model, params=params, verbose=False)
        self._mem = self._ctx.memory
        self._batch = llama_cpp.llama_batch_init(options.n_batch, 0, 1)
        self._free_slots = set(range(options.n_parallel))  # slots without a running sequence
        self._free_spares = list(range(params.n_seq_max - 1, options.n_parallel - 1, -1))
        self._cache = PrefixCache(cache_tokens, options.prefix_cache_entries)
        self._inbox: list[Generation] = []
        self._waiting: list[Generation] = []
        self._running: list[Generation] = []
        self._cond = threading.Condition()
        self._closed = False
        self._processed = 0
        self._reused = 0
        self._thread = threading.Thread(target=self._loop, name="llm-batch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ called from other threads

    def submit(self, prompt: Sequence[int], sampling: Sampling, max_tokens: int,
               cancel: threading.Event) -> Generation:  # fmt: skip
        seq = Generation(list(prompt), sampling, max_tokens, cancel)
        with self._cond:
            if self._closed:
                raise RuntimeError("the model is shutting down")
            self._inbox.append(seq)
            self._cond.notify()
        return seq

    def stats(self) -> EngineStats:
        return EngineStats(
            self._processed, self._reused, len(self._running), len(self._waiting) + len(self._inbox),
            len(self._cache), self._cache.tokens,
        )  # fmt: skip

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._lib.llama_batch_free(self._batch)
            self._ctx.close()

    # ------------------------------------------------------------ the scheduler thread

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._inbox and not self._running and not self._waiting:
                        self._cond.wait()
                    if self._closed:
                        break
                    self._waiting.extend(self._inbox)
                    self._inbox.clear()
                self._drop_cancelled()
                self._start_waiting()
                if self._running:
                    self._step()
        except BaseException as exc:  # a llama.cpp failure: tell every reader, accept no more
            log.exception("the batch engine stopped")
            with self._cond:
                self._closed = True
                orphans = self._inbox + self._waiting + self._running
            for seq in orphans:
                seq.out.put(exc)
            return
        for seq in self._inbox + self._waiting + self._running:
            seq.out.put(RuntimeError("the model is shutting down"))

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self._waiting if s.cancel.is_set()]:
            self._waiting.remove(seq)
            seq.out.put(None)
        for seq in [s for s in self._running if s.cancel.is_set()]:
            self._finish(seq)

    def _start_waiting(self) -> None:
        for seq in list(self._waiting):
            if len(self._running) >= self.options.n_parallel:
                return
            src, have = self._cache.best(seq.prompt)
            soon = 0
            for other in self._running:
                shared = common_prefix(seq.prompt, other.prompt)
                now = min(shared, len(other.cached))
                if now > have:
                    src, have = other.seq_id, now
                if other.prefilling and shared > len(other.cached):
                    soon = max(soon, shared)
            if soon - have >= MIN_SHARED_WAIT:
                continue  # that sequence is computing a prefix we share: copy it when it is done
            self._waiting.remove(seq)
            self._start(seq, src, have)

    def _start(self, seq: Generation, src: int, have: int) -> None:
        slot = min(self._free_slots)  # the lowest: running ids stay one consecutive run
        self._free_slots.remove(slot)
        seq.seq_id = slot
        reuse = min(have, len(seq.prompt) - 1)  # the last prompt token is evaluated for its logits
        if slot in self._cache:
            if src == slot and reuse > 0:  # the slot holds our prefix: keep it where it is
                self._cache.take(slot)
                self._lib.llama_memory_seq_rm(self._mem, slot, reuse, -1)
                src = -1
                self._reuse(seq, reuse)
            else:
                moved = self._evacuate(slot)
                if src == slot:
                    src = moved
        if src >= 0 and reuse > 0:
            self._copy(src, slot, reuse)
            self._reuse(seq, reuse)
            if src in self._cache:
                self._cache.touch(src)
        seq.sampler = self._sampler(seq.sampling)
        self._running.append(seq)

    def _reuse(self, seq: Generation, n: int) -> None:
        seq.cached = seq.prompt[:n]
        self._reused += n

    def _copy(self, src: int, dst: int, n: int) -> None:
        """Give sequence `dst` the cells of the first `n` tokens of `src` (dst holds nothing)."""
        if self.options.kv_unified:  # tag the same cells with one more sequence id
            self._lib.llama_memory_seq_cp(self._mem, src, dst, 0, n)
        else:  # streams copy whole (llama.cpp's rule), then the tail past the prefix goes
            self._lib.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
            self._lib.llama_memory_seq_rm(self._mem, dst, n, -1)

    def _evacuate(self, slot: int) -> int:
        """Move the cache entry in `slot` to a spare id, freeing the slot; returns the new id.

        There is always a spare: entries are at most prefix_cache_entries, one of them is here.
        """
        spare = self._free_spares.pop()
        self._copy(slot, spare, len(self._cache.move(slot, spare)))
        self._lib.llama_memory_seq_rm(self._mem, slot, -1, -1)
        return spare

    def _sampler(self, s: Sampling) -> Any:
        sampler = self._internals.LlamaSampler()
        if s.repetition_penalty != 1.0 or s.frequency_penalty or s.presence_penalty:
            sampler.add_penalties(self._n_vocab, PENALTY_LAST_N, s.repetition_penalty, s.frequency_penalty,
                                  s.presence_penalty)  # fmt: skip
        if s.temperature <= 0:
            sampler.add_greedy()
            return sampler
        if s.top_k > 0:
            sampler.add_top_k(s.top_k)
        if s.top_p < 1.0:
            sampler.add_top_p(s.top_p, 1)
        if s.min_p > 0:
            sampler.add_min_p(s.min_p, 1)
        sampler.add_temp(s.temperature)
        sampler.add_dist(s.seed if s.seed is not None else random.getrandbits(31))
        return sampler

    def _step(self) -> None:
        batch = self._batch
        n = 0
        outputs: list[tuple[Generation, int]] = []
        chunks: list[tuple[Generation, int]] = []  # prefilling sequence, tokens added

        def add(token: int, pos: int, seq_id: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = logits
            n += 1

        # what each sequence adds: decoding ones their last token; prefilling ones, oldest first,
        # a chunk of their prompt within the budget
        decoding = sum(1 for seq in self._running if not seq.prefilling)
        budget = self.options.n_batch - decoding
        chunk = min(budget, self.options.prefill_chunk) if decoding else budget
        for seq in self._running:
            if seq.prefilling and chunk > 0:
                take = min(len(seq.prompt) - len(seq.cached), chunk)
                chunks.append((seq, take))
                chunk -= take
        takes = dict(chunks)
        for seq in sorted(self._running, key=lambda s: s.seq_id):  # in slot order: one ubatch
            if not seq.prefilling:
                assert seq.last is not None
                add(seq.last, len(seq.cached), seq.seq_id, True)
                outputs.append((seq, n - 1))
            elif seq in takes:
                start = len(seq.cached)
                end = start + takes[seq]
                for i in range(start, end):
                    add(seq.prompt[i], i, seq.seq_id, i == len(seq.prompt) - 1)
                if end == len(seq.prompt):
                    outputs.append((seq, n - 1))
        batch.n_tokens = n
        rc = self._lib.llama_decode(self._ctx.ctx, batch)
        if rc != 0:
            self._decode_failed(rc, [s for s, _ in chunks])
            return
        for seq, take in chunks:
            start = len(seq.cached)
            seq.cached.extend(seq.prompt[start : start + take])
            self._processed += take
        for seq, index in outputs:
            if seq.last is not None:
                seq.cached.append(seq.last)
            token = int(self._lib.llama_sampler_sample(seq.sampler.sampler, self._ctx.ctx, index))
            seq.generated += 1
            seq.out.put(token)
            if (
                self._is_eog(token)
                or seq.generated >= seq.max_tokens
                or len(seq.cached) + 1 >= self.options.n_ctx
            ):
                self._finish(seq)
            else:
                seq.last = token

    def _decode_failed(self, rc: int, prefilling: list[Generation]) -> None:
        evicted = self._cache.pop_lru() if rc == 1 else None
        if evicted is not None:  # no room: free cached prefixes first, then try again
            self._release_id(evicted)
            return
        victims = prefilling or list(self._running)
        log.error("llama_decode returned %d; ending %d sequence(s)", rc, len(victims))
        for seq in victims:
            seq.out.put(
                RuntimeError(f"llama_decode failed ({rc}): the KV cache is full or the batch is invalid")
            )
            seq.cancel.set()
            self._finish(seq, keep=False)

    def _finish(self, seq: Generation, *, keep: bool = True) -> None:
        self._running.remove(seq)
        seq.out.put(None)
        seq.sampler = None
        if keep and seq.cached:
            for seq_id in self._cache.add(seq.seq_id, list(seq.cached)):
                self._release_id(seq_id)
        else:
            self._release_id(seq.seq_id)
        self._free_slots.add(seq.seq_id)
        seq.seq_id = -1

    def _release_id(self, seq_id: int) -> None:
        """Free the cells of a sequence id that no running sequence or cache entry holds now."""
        self._lib.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        if seq_id >= self.options.n_parallel:
            self._free_spares.append(seq_id)


def drain(seq: Generation) -> Iterator[int]:
    """Token ids of `seq` as they come (blocking); stops the sequence when the reader stops."""
    try:
        while True:
            item = seq.out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        with contextlib.suppress(Exception):
            seq.cancel.set()
