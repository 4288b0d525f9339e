"""LLM backends: each turns a prompt into a stream of token ids.

The OpenAI protocol, stop strings, incremental detokenization, token counting and limits live in
`server.py`, the same for every backend. A backend only renders a chat, tokenizes, decodes and
samples the next tokens. `slots` generations may run at once (llama.cpp: sequences of one
context, decoded together by batching.py; transformers: one thread each).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from openeas.processors.llm.batching import BatchEngine, EngineOptions, EngineStats, drain
from openeas.processors.llm.sampling import Sampling
from openeas.processors.serving import cpu_count, fail_start, require

log = logging.getLogger("openeas.processors.llm")

PROCESSOR = "llm"

# used when a model carries no chat template
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class Backend(Protocol):
    name: str
    context_length: int
    slots: int

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str: ...

    def tokenize(self, text: str, *, add_special: bool) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def is_eog(self, token: int) -> bool: ...

    def generate(
        self, prompt: Sequence[int], sampling: Sampling, cancel: threading.Event, max_tokens: int
    ) -> Iterator[int]:
        """Token ids after the prompt: at most `max_tokens` (the caller may stop earlier: at EOG,
        a stop string, or when `cancel` is set)."""
        ...

    def engine_stats(self) -> EngineStats | None:
        """Prompt tokens processed/reused and sequences running (None: no batch engine)."""
        ...

    def close(self) -> None: ...


class ChatTemplate:
    """A Jinja chat template, compiled on first use and kept (compiling it for every request took
    ~4 ms of the event loop per chat on a 2-core machine, while token streams waited)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled: Any = None

    def render(self, messages: Sequence[Mapping[str, str]], bos: str, eos: str) -> str:
        if self._compiled is None:
            self._compiled = self._compile()  # a template that fails to compile fails each chat
        return str(
            self._compiled.render(
                messages=list(messages), add_generation_prompt=True, bos_token=bos, eos_token=eos
            )
        )

    def _compile(self) -> Any:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols"],
        )
        env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.source)


# ---------------------------------------------------------------- llama.cpp


# model_config.omp_wait_policy -> the libgomp environment it sets (see LlamaCppBackend)
OMP_POLICIES: Mapping[str, Mapping[str, str]] = {
    "bounded": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "10000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
}


class LlamaCppBackend:
    """A GGUF model on llama.cpp: one model, one context, `n_parallel` sequences decoded together
    by the batch engine (batching.py), which also reuses KV cells of shared prompt prefixes."""

    name = "llama.cpp"

    def __init__(self, path: Path, config: Mapping[str, Any], slots: int) -> None:
        # llama.cpp's OpenMP threads meet at each of the hundreds of barriers of a decode step.
        # Spinning without bound there (libgomp's ACTIVE) starves the rest of the process on
        # shared CPUs: a step took 0.5-4 s instead of 20 ms on a busy 2-core machine, and the
        # HTTP thread could not send the token just decoded. Sleeping at once (PASSIVE) pays a
        # futex wake-up per barrier: 16 batched streams made half the tokens/s. "bounded" (the
        # default) spins about 0.1 ms, then sleeps: 1.7-1.9x PASSIVE's tokens/s at 16 streams on
        # an idle 2-core machine and no worse with both cores busy (docs/benchmarks.md). An
        # OMP_WAIT_POLICY in the environment wins. Read when libgomp loads: set before the import.
        policy = str(config.get("omp_wait_policy", "bounded")).lower()
        if policy not in OMP_POLICIES:
            fail_start(
                f"model_config.omp_wait_policy must be one of {', '.join(OMP_POLICIES)}, got {policy!r}"
            )
        if "OMP_WAIT_POLICY" not in os.environ:
            os.environ.update(OMP_POLICIES[policy])
        self._llama_cpp = llama_cpp = require("llama_cpp", extra="llm", processor=PROCESSOR)
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        set_verbose(bool(config.get("verbose", False)))
        threads = int(config.get("n_threads", cpu_count()))
        self.context_length = int(config.get("n_ctx", config.get("max_model_len", 4096)))
        n_batch = int(config.get("n_batch", 512))
        # per-sequence KV streams (exact batched output) unless model_config.kv_unified; a cached
        # prefix then costs a whole stream of n_ctx cells, so keep as many as run at once
        unified = bool(config.get("kv_unified", False))
        try:
            options = EngineOptions(
                n_parallel=slots,
                n_ctx=self.context_length,
                n_batch=n_batch,
                prefill_chunk=int(config.get("prefill_chunk", min(128, n_batch))),
                prefix_cache_tokens=int(config.get("prefix_cache_tokens", self.context_length)),
                prefix_cache_entries=int(config.get("prefix_cache_entries", 16 if unified else slots)),
                n_threads=threads,
                n_threads_batch=int(config.get("n_threads_batch", threads)),
                flash_attn=bool(config.get("flash_attn", True)),
                kv_unified=unified,
            )
            options.check()
        except (TypeError, ValueError) as exc:
            fail_start(f"model_config: {exc}")
        self.slots = slots
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = int(config.get("n_gpu_layers", 0))
        try:
            self._model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
            self._engine = BatchEngine(llama_cpp, _internals, self._model, options, self.is_eog)
        except Exception as exc:
            fail_start(f"llama.cpp cannot load {path}: {exc}")
        metadata = self._model.metadata()
        template = str(config.get("chat_template") or metadata.get("tokenizer.chat_template") or "")
        if not template:
            log.warning("%s has no chat template; using ChatML", path.name)
            template = CHATML_TEMPLATE
        self._chat = ChatTemplate(template)
        self._bos = self._token_text(self._model.token_bos())
        self._eos = self._token_text(self._model.token_eos())
        self.model_name = str(metadata.get("general.name", path.stem))

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._model.token_get_text(token))

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        return self._chat.render(messages, self._bos, self._eos)

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_special, True))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(self._model.detokenize(list(ids))).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._model.vocab, token))

    def generate(
        self, prompt: Sequence[int], sampling: Sampling, cancel: threading.Event, max_tokens: int
    ) -> Iterator[int]:
        return drain(self._engine.submit(prompt, sampling, max_tokens, cancel))

    def engine_stats(self) -> EngineStats | None:
        return self._engine.stats()

    def close(self) -> None:
        self._engine.close()
        with contextlib.suppress(Exception):
            self._model.close()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- transformers


class TransformersBackend:
    """A causal LM directory (config.json + weights + tokenizer) on torch, decoded token by token."""

    name = "transformers"

    def __init__(self, path: Path, config: Mapping[str, Any], slots: int) -> None:
        self._torch = torch = require("torch", extra="llm-hf", processor=PROCESSOR)
        transformers = require("transformers", extra="llm-hf", processor=PROCESSOR)
        if "n_threads" in config:
            torch.set_num_threads(int(config["n_threads"]))
        try:
            self._tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            dtype = config.get("dtype", "auto")
            self._model = transformers.AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, dtype=getattr(torch, dtype) if dtype != "auto" else "auto"
            )
        except Exception as exc:
            fail_start(f"transformers cannot load {path}: {exc}")
        self._device = str(config.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
        self._model.to(self._device)
        self._model.eval()
        self.slots = slots
        cfg = self._model.config
        limit = (
            config.get("max_model_len")
            or config.get("n_ctx")
            or getattr(cfg, "max_position_embeddings", 2048)
        )
        self.context_length = int(limit or 2048)
        eos: set[int] = set()
        for source in (getattr(self._model, "generation_config", None), cfg, self._tok):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list):
                eos.update(int(v) for v in value)
        self._eos = frozenset(eos)
        self._template = config.get("chat_template") or getattr(self._tok, "chat_template", None)
        self._chatml = ChatTemplate(CHATML_TEMPLATE)  # when the tokenizer has no template
        self.model_name = path.name

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        if self._template:
            return str(
                self._tok.apply_chat_template(
                    list(messages), chat_template=self._template, tokenize=False, add_generation_prompt=True
                )
            )
        bos = self._tok.bos_token or ""
        eos = self._tok.eos_token or ""
        return self._chatml.render(messages, bos, eos)

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return list(self._tok(text, add_special_tokens=add_special)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def is_eog(self, token: int) -> bool:
        return token in self._eos

    def engine_stats(self) -> EngineStats | None:
        return None

    def generate(
        self, prompt: Sequence[int], sampling: Sampling, cancel: threading.Event, max_tokens: int
    ) -> Iterator[int]:
        torch = self._torch
        gen = torch.Generator(device=self._device)
        gen.manual_seed(sampling.seed if sampling.seed is not None else random.getrandbits(63))
        ids = torch.tensor([list(prompt)], device=self._device)
        counts: dict[int, int] = {}
        past = None
        with torch.inference_mode():
            for _ in range(max_tokens):
                if cancel.is_set():
                    return
                out = self._model(input_ids=ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                token = self._sample(logits, sampling, counts, gen)
                counts[token] = counts.get(token, 0) + 1
                yield token
                ids = torch.tensor([[token]], device=self._device)

    def _sample(self, logits: Any, s: Sampling, counts: Mapping[int, int], gen: Any) -> int:
        torch = self._torch
        if counts and (s.repetition_penalty != 1.0 or s.presence_penalty or s.frequency_penalty):
            idx = torch.tensor(list(counts), device=logits.device)
            freq = torch.tensor([float(c) for c in counts.values()], device=logits.device)
            seen = logits[idx]
            if s.repetition_penalty != 1.0:
                seen = torch.where(seen > 0, seen / s.repetition_penalty, seen * s.repetition_penalty)
            seen = seen - s.presence_penalty - s.frequency_penalty * freq
            logits[idx] = seen
        if s.temperature <= 0:
            return int(torch.argmax(logits).item())
        logits = logits / s.temperature
        if s.top_k > 0:
            kth = torch.topk(logits, min(s.top_k, logits.numel())).values[-1]
            logits = torch.where(logits < kth, torch.full_like(logits, -float("inf")), logits)
        probs = torch.softmax(logits, dim=-1)
        if s.min_p > 0:
            probs = torch.where(probs < s.min_p * probs.max(), torch.zeros_like(probs), probs)
        if s.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            cum = torch.cumsum(sorted_p, dim=-1)
            drop = cum - sorted_p > s.top_p
            sorted_p = torch.where(drop, torch.zeros_like(sorted_p), sorted_p)
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=gen).item())

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- selection


def find_gguf(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            fail_start(f"{path} holds {len(found)} .gguf files; point model_path at one of them")
    return None


def choose_backend(path: Path, config: Mapping[str, Any]) -> str:
    """`model_config.backend` (llama.cpp | transformers | vllm), else by what model_path is."""
    wanted = str(config.get("backend", "auto")).lower().replace("_", ".").replace("llamacpp", "llama.cpp")
    if wanted in ("llama.cpp", "llama.cpp.python", "gguf"):
        return "llama.cpp"
    if wanted in ("transformers", "hf", "vllm"):
        return wanted if wanted != "hf" else "transformers"
    if wanted != "auto":
        fail_start(f"model_config.backend {wanted!r} is unknown; use llama.cpp, transformers or vllm")
    if find_gguf(path) is not None:
        return "llama.cpp"
    if path.is_dir() and (path / "config.json").exists():
        return "vllm" if vllm_usable() else "transformers"
    fail_start(f"{path} is neither a .gguf file nor a model directory with config.json")


def vllm_usable() -> bool:
    """vLLM is importable and torch sees a GPU (checked without importing vllm itself)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def load_backend(kind: str, path: Path, config: Mapping[str, Any], slots: int) -> Backend:
    if kind == "llama.cpp":
        gguf = find_gguf(path)
        if gguf is None:
            fail_start(f"the llama.cpp backend needs a .gguf file; {path} is not one")
        return LlamaCppBackend(gguf, config, slots)
    return TransformersBackend(path, config, slots)
