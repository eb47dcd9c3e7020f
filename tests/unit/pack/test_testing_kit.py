"""firebreak.testing: the helpers shipped for users' tests behave as documented."""

from __future__ import annotations

import orjson
import pytest
from firebreak.testing import MIN, SEC, RuleError, event, merged, of_type, offset, report, rules, run, steady

LEAK = "rule leak:\n  count(pii) >= 2 over 1m by tenant -> sev2 contain disable_feature\n"


def test_the_docstring_example_runs_on_both_engines_with_the_same_records():
    """Differential: firebreak.testing.run's two engines, in every pass."""
    pack = rules(LEAK)
    events = merged(
        steady(0, 10 * MIN, 10 * SEC, tenant="acme", flagged=["pii"], every_nth=3),
        [report("r1", 90 * SEC, "data_exposure", tenant="acme")],
    )
    python = run(pack, events)
    native = run(pack, events, engine="native")
    assert [orjson.dumps(r) for r in python] == [orjson.dumps(r) for r in native]
    (opened,) = of_type(python, "incident.opened")
    assert opened["group"] == {"tenant": "acme"} and offset(opened) == 35 * SEC  # the 5s step after the 2nd
    with pytest.raises(ValueError, match="python or native"):
        run(pack, events, engine="java")


def test_bad_rule_text_raises_with_every_diagnostic_and_its_caret():
    with pytest.raises(RuleError) as caught:
        rules("rate(halucination) > 0.1 over 10m -> sev2", vocabulary="")
    assert "test.rules:1:6: error: unknown flag `halucination`" in str(caught.value)
    assert "     ^^^^^^^^^^^^" in str(caught.value)
    with pytest.raises(RuleError, match="unknown key `teem`"):
        rules(LEAK, policy='[sev2]\nteem = "x"\n')


def test_events_are_validated_only_when_asked():
    assert event("e1", 0, latency_ms="slow").data["latency_ms"] == "slow"  # the core must cope with it
    with pytest.raises(ValueError, match="`latency_ms` must be a number"):
        event("e1", 0, latency_ms="slow", validate=True)
