"""Metrics of the `llm` processor, served at `GET /metrics` (Prometheus text) on the instance.

Names follow the OpenTelemetry GenAI semantic conventions (`gen_ai.server.*`, dots as
underscores, the unit as a suffix), with their attributes as labels:

- `gen_ai_server_time_to_first_token_seconds` (histogram): request received -> first token;
- `gen_ai_server_time_per_output_token_seconds` (histogram): the mean time between output
  tokens after the first (decode speed), one observation per request with 2+ tokens;
- `gen_ai_server_request_duration_seconds` (histogram): request received -> last token, with
  `error_type` ("" when it succeeded);
- `gen_ai_client_token_usage_total` (counter): tokens by `gen_ai_token_type` (input / output).

With the llama.cpp batch engine, also its own state (openeas names, no GenAI equivalent):
`openeas_llm_prompt_tokens_processed_total` / `openeas_llm_prompt_tokens_reused_total`
(counters: prompt tokens run through the model vs copied from a cached prefix), and gauges
`openeas_llm_sequences_running`, `openeas_llm_sequences_waiting`,
`openeas_llm_prefix_cache_entries`, `openeas_llm_prefix_cache_tokens`.

Labels: `gen_ai_operation_name` (chat / text_completion), `gen_ai_request_model` (the served
name). The registry belongs to the app (no global default registry). The control plane federates
these with `service` and `instance` labels (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from openeas.processors.llm.batching import EngineStats

# the bucket boundaries the GenAI conventions advise
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
LABELS = ("gen_ai_operation_name", "gen_ai_request_model")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class EngineCollector(Collector):
    """Reads the batch engine's counters at scrape time (they live in the engine's thread)."""

    def __init__(self, stats: Callable[[], EngineStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        if s is None:
            return
        counters = (
            ("prompt_tokens_processed", "Prompt tokens run through the model", s.prompt_tokens_processed),
            ("prompt_tokens_reused", "Prompt tokens copied from a cached or running sequence's KV cells",
             s.prompt_tokens_reused),
        )  # fmt: skip
        for name, doc, value in counters:
            yield CounterMetricFamily(f"openeas_llm_{name}", doc, value=value)
        gauges = (
            ("sequences_running", "Sequences in the decode batch", s.running),
            ("sequences_waiting", "Sequences accepted, not yet in the batch", s.waiting),
            ("prefix_cache_entries", "Finished sequences kept for prefix reuse", s.cached_prefixes),
            ("prefix_cache_tokens", "Tokens held by the prefix cache", s.cached_prefix_tokens),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(f"openeas_llm_{name}", doc, value=value)


class LlmMetrics:
    def __init__(self, engine_stats: Callable[[], EngineStats | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if engine_stats is not None:
            r.register(EngineCollector(engine_stats))
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token", "Time to generate the first token (request received -> "
            "first token)", LABELS, unit="seconds", buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token", "Mean time per output token after the first",
            LABELS, unit="seconds", buckets=TPOT_BUCKETS, registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "gen_ai_server_request_duration", "Generation request duration (received -> last token)",
            (*LABELS, "error_type"), unit="seconds", buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "gen_ai_client_token_usage", "Tokens used, by type (input: the prompt, output: the completion)",
            (*LABELS, "gen_ai_token_type"), registry=r,
        )  # fmt: skip

    def first_token(self, operation: str, model: str, seconds: float) -> None:
        self.ttft.labels(operation, model).observe(seconds)

    def finished(
        self,
        operation: str,
        model: str,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        decode_seconds: float | None,
    ) -> None:
        self.duration.labels(operation, model, "").observe(seconds)
        self.tokens.labels(operation, model, "input").inc(input_tokens)
        self.tokens.labels(operation, model, "output").inc(output_tokens)
        if decode_seconds is not None and output_tokens > 1:
            self.tpot.labels(operation, model).observe(decode_seconds / (output_tokens - 1))

    def failed(self, operation: str, model: str, seconds: float, error_type: str) -> None:
        self.duration.labels(operation, model, error_type).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
