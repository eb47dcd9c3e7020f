"""Investigations: reconstruct one incident from the event log and rank its likely causes.

    report = investigate(rules, events, Selection(incident_id="inc_…"))
    print(render_markdown(report))

Pure like the detection core: events and rules in, a JSON-ready report out; no clock,
no I/O. The adapters (files, Kafka topics) and the CLI load the events.
"""

from engine.investigate.incident import IncidentNotFound, Selection, list_incidents
from engine.investigate.report import Options, investigate

__all__ = ["IncidentNotFound", "Options", "Selection", "investigate", "list_incidents"]
