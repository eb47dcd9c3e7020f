"""Firebreak: detect, classify and contain AI incidents in production.

The packages, each owning one thing (docs/native.md says what runs in Rust):

- `firebreak.dsl` — the rules language: parse → check → compile to `CompiledRule` (metric
  kinds in dsl/metrics.py, the severity policy in dsl/policy.py).
- `firebreak.core` — the pure detection core (the executable specification): events and an
  explicit watermark in, records out; no Kafka, no clock, no I/O.
- `firebreak.native` — the same core compiled (Rust, native/src), the default engine.
- `firebreak.records` — the record kinds, severities and record types every seam speaks.
- `firebreak.adapters` — the edges: files, Kafka topics, the live Faust worker, notify, the one
  drive loop they share.
- `firebreak.investigate` — reconstruct an incident from the log and rank its likely causes.
- `firebreak.sdk` — what services import: publish events, apply containment commands.
- `firebreak.testing` — build an engine from rule text, feed events, read records (for tests
  of rule packs and of the engine).
- `firebreak.cli` — `firebreak`, the one entry point; `firebreak.synthetic` / `firebreak.families`
  generate traffic for the demo and the pack evaluation.
"""

__version__ = "0.1.0"
