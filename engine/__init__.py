"""Firebreak: detect, classify and contain AI incidents in production.

The packages, each owning one thing (docs/native.md says what runs in Rust):

- `engine.dsl` — the rules language: parse → check → compile to `CompiledRule` (metric
  kinds in dsl/metrics.py, the severity policy in dsl/policy.py).
- `engine.core` — the pure detection core (the executable specification): events and an
  explicit watermark in, records out; no Kafka, no clock, no I/O.
- `engine.native` — the same core compiled (Rust, native/src), the default engine.
- `engine.records` — the record kinds, severities and record types every seam speaks.
- `engine.adapters` — the edges: files, Kafka topics, the live Faust worker, notify, the one
  drive loop they share.
- `engine.investigate` — reconstruct an incident from the log and rank its likely causes.
- `engine.sdk` — what services import: publish events, apply containment commands.
- `engine.testing` — build an engine from rule text, feed events, read records (for tests
  of rule packs and of the engine).
- `engine.cli` — `firebreak`, the one entry point; `engine.synthetic` / `engine.families`
  generate traffic for the demo and the pack evaluation.
"""

__version__ = "0.1.0"
