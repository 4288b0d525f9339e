"""Asynchronous services: EAS's queue service (input queue + sink) for `metadata.type: "Async"`.

`python -m openeas.queue` runs one service's queue server; docs/async.md describes the API, the
spec's `queue` block and every choice made where EAS's docs are silent.
"""
