"""How many false incidents a day does noise alone open? An estimate, per rule and family, for
the significance rules of a pack (`with C% confidence`, rates by tenant or user).

    python benchmarks/noise_budget.py                          # the starter pack, every family
    python benchmarks/noise_budget.py --families small firehose --rules candidate/

pack_eval.py counts the false incidents a pack opens on 20 seeds of each family; at a few in
a thousand days that count is zero whatever the rule. This computes the expectation instead,
from the families' shapes (engine/firebreak/families.py: each tenant's rate, each user's, the
classifiers' noise) and the rule's numbers, so that a rule's comment can state the noise it
assumes and what noise alone costs.

The estimate: a group's window holds N ~ Poisson(rate × window) events, K ~ Binomial(N, noise)
of them flagged. A new incident opens when the condition starts to hold (the rule's
significance test, `min N flagged`, `min N events`): an event arriving or leaving turns a
window that does not hold into one that does. The rate of such crossings, summed over the
family's groups, is the false incidents per day — an upper bound of sorts (a crossing while
an incident is still open opens nothing; evaluation steps skip brief ones). For `Kx
population` the rest's rate is drawn too: its flagged events ~ Poisson(noise × the rest's
events), at least one (as the engine counts it). Users are binned by rate (ordinary users'
calls are skewed, see `_tenants` in engine/firebreak/families.py); each tenant's backend account is
one group. Rules with a `where`, a baseline or another metric are left out.
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import cache

from firebreak.adapters.rule_files import read_rule_sources
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.core.significance import binomial_upper
from firebreak.dsl import CompiledRule, load_rules
from firebreak.families import FAMILIES, Family

DAY_S = 86_400
OTHER_NOISE = {"system_prompt_leak": 0.0001, "cross_tenant": 0.00002}  # as engine/firebreak/families.py draws them


def noise_of(family: Family, flag: str) -> float | None:
    return {"prompt_injection": family.noise, "jailbreak": family.noise / 3, "pii": family.pii_noise}.get(
        flag, OTHER_NOISE.get(flag)
    )


def _poisson(mean: float) -> list[tuple[int, float]]:
    if mean <= 0:
        return [(0, 1.0)]
    lo, hi = max(0, int(mean - 8 * math.sqrt(mean) - 5)), int(mean + 8 * math.sqrt(mean) + 10)
    return [(n, math.exp(n * math.log(mean) - mean - math.lgamma(n + 1))) for n in range(lo, hi + 1)]


def _binomial(n: int, p: float, kmax: int = 16) -> list[tuple[int, float]]:
    if p <= 0:
        return [(0, 1.0)]
    return [
        (
            k,
            math.exp(
                math.lgamma(n + 1)
                - math.lgamma(k + 1)
                - math.lgamma(n - k + 1)
                + k * math.log(p)
                + (n - k) * math.log1p(-p)
            ),
        )
        for k in range(0, min(n, kmax) + 1)
    ]


class Condition:
    def __init__(self, rule: CompiledRule) -> None:
        self.alpha, self.min_flagged = rule.alpha, rule.min_flagged or 0
        self.min_events = rule.min_events

    @cache  # noqa: B019 - one instance per rule, a few per run
    def holds(self, k: int, n: int, limit: float) -> bool:
        if n < self.min_events or k < self.min_flagged or n == 0 or k / n <= limit:
            return False
        return binomial_upper(k, n, min(limit, 1.0)) <= self.alpha


def crossings_per_day(cond: Condition, window_s: float, rate: float, p: float, limit: float) -> float:
    """Expected times a day a group of ``rate`` events/s, each flagged with probability ``p``,
    starts to hold against ``limit``."""
    total = 0.0
    for n, pn in _poisson(rate * window_s):
        if pn < 1e-14:
            continue
        for k, pk in _binomial(n, p):
            w = pn * pk
            if w < 1e-16 or cond.holds(k, n, limit):
                continue
            total += w * rate * p * cond.holds(k + 1, n + 1, limit)  # a flagged event arrives
            total += w * rate * (1 - p) * cond.holds(k, n + 1, limit)
            if n > 0:  # an event leaves
                total += w * rate * (1 - k / n) * cond.holds(k, n - 1, limit)
                total += w * rate * (k / n) * cond.holds(k - 1, n - 1, limit)
    return total * DAY_S


def groups(family: Family, by: tuple[tuple[str, ...], ...]) -> list[tuple[float, int]]:
    """(events/s, how many groups) at the middle of the family's span."""
    rate = family.rate * (1 + (family.growth - 1) * 0.5)
    n = family.tenants
    ratio = family.spread ** (1 / (n - 1)) if n > 1 else 1.0
    weights = [ratio**-i for i in range(n)]
    shares = [w / sum(weights) for w in weights]
    if by == (("tenant",),):
        return [(rate * s, 1) for s in shares]
    out: list[tuple[float, int]] = []
    for share in shares:
        count = max(5, min(50_000, int(family.rate * share * (1 - family.heavy_share) * 60)))
        ordinary = rate * share * (1 - family.heavy_share)
        out.append((rate * share * family.heavy_share, 1))  # the backend account
        j = 0
        while j < count:  # user j's share of the ordinary calls: ((j+1)/N)^(2/3) - (j/N)^(2/3)
            hi = min(count, max(j + 1, int(j * 1.8)))
            part = (hi / count) ** (2 / 3) - (j / count) ** (2 / 3)
            out.append((ordinary * part / (hi - j), hi - j))
            j = hi
    return out


def per_day(rule: CompiledRule, family: Family) -> float | None:
    flag = rule.arg[-1] if rule.arg else None
    p = noise_of(family, flag) if flag else None
    if not rule.metric.rate or rule.confidence is None or rule.where is not None or p is None:
        return None
    if rule.by not in ((("tenant",),), (("user",),)) or (rule.factor is not None and rule.population is None):
        return None
    cond, window_s = Condition(rule), rule.window_ms / 1000
    total_rate = family.rate * (1 + (family.growth - 1) * 0.5)
    if rule.population is not None:
        rest = total_rate * window_s
        draws = [(max(h, 1) / rest, w) for h, w in _poisson(p * rest) if w > 1e-6] if p * rest <= 30 else [(p, 1.0)]
    else:
        draws = [(rule.threshold, 1.0)]
    total = 0.0
    for rate, count in groups(family, rule.by):
        for reference, weight in draws:
            limit = rule.population * reference if rule.population is not None else reference
            total += count * weight * crossings_per_day(cond, window_s, rate, p, round(limit, 9))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", help="a rules directory or file (default: the starter pack)")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args(argv)
    rules, problems = load_rules(read_rule_sources([args.rules]) if args.rules else starter_rule_sources())
    if problems:
        raise SystemExit("\n".join(p.render() for p in problems))
    print("| rule | sev | " + " | ".join(args.families) + " |")
    print("|---|---|" + "---:|" * len(args.families))
    severe = [0.0] * len(args.families)
    for rule in rules:
        if rule.confidence is None:
            continue
        cells = [per_day(rule, FAMILIES[name]) for name in args.families]
        if all(c is None for c in cells):
            continue
        if rule.severity <= 2:
            severe = [t + (c or 0.0) for t, c in zip(severe, cells, strict=True)]
        row = " | ".join("-" if c is None else f"{c:.1e}" for c in cells)
        print(f"| {rule.name} | sev{int(rule.severity)} | {row} |", flush=True)
    print("| **sev1–sev2, these rules** | | " + " | ".join(f"**{t:.1e}**" for t in severe) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
