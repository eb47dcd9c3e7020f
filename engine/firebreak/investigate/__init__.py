"""Investigations: reconstruct one incident from the event log and rank its likely causes.

    report = investigate(rules, events, Selection(incident_id="inc_…"))
    print(render_markdown(report))           # or render_html(report); report.to_json() for JSON

Pure like the detection core: events and rules in, a typed `Report` out (model.py: `Cause`,
`Contributor`, `Mark`, `Lags`, `Review`, … — their `to_json()` is the JSON of `--format json`,
`Report.from_json` reads it back); no clock, no I/O. The package owns the passes of an
investigation (report.py orchestrates them: incident.py picks the incident, anomaly.py dates
the onset, contributors.py, adversarial.py, causes.py, reports.py, series.py, review.py) and
its renderings (markdown.py, html.py with svg.py). The adapters (files, Kafka topics) and the
CLI load the events.
"""

from firebreak.investigate.incident import IncidentNotFound, Selection, list_incidents
from firebreak.investigate.model import Report
from firebreak.investigate.report import Options, investigate

__all__ = ["IncidentNotFound", "Options", "Report", "Selection", "investigate", "list_incidents"]
