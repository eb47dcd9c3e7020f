"""Live detection on Kafka: the Faust worker and its two stages.

    ai.inference.events ──route──▶ <app>.routed (one partition per shard) ──evaluate──▶ ai.incidents
                                                                                     └─▶ ai.containment.commands

`routing.py` and `shard.py` hold the stage logic without Kafka, `app.py` wires it
into Faust agents, `checkpoints.py` keeps shard state crash-safe. See docs/live.md.
"""
