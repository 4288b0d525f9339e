"""`llm` processor: an OpenAI-compatible server (`/v1/chat/completions`, `/v1/completions`,
`/v1/models`, SSE streaming) over llama.cpp (GGUF), transformers (a local model directory), or
vLLM (when installed and a GPU is present). Run with `python -m openeas.processors.llm`.
"""
