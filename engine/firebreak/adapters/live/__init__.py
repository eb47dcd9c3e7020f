"""Live detection on Kafka: the Faust worker and its two stages.

    ai.inference.events ──route──▶ <app>.routed (one partition per shard) ──evaluate──▶ ai.incidents
                                                                                     └─▶ ai.containment.commands

`routing.py` (stage 1), `routed.py` (the routed message, events as data) and `shard.py`
(stage 2) hold the stage logic without Kafka; the worker's three parts — `input_source.py`,
`shard_host.py`, `committer.py` — run it on Kafka, and `app.py` wires them into Faust;
`batches.py` is the one module that touches Faust's internals; `startup.py` creates the topics and
writes the start-up line; `checkpoints.py` keeps shard
state crash-safe. See docs/live.md.
"""
