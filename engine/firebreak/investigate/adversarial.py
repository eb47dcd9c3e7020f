"""Signs of adversarial activity: attack flags, or the anomaly itself, concentrated in a
few users or tenants.

Suspected when, during the incident, either
- at least 10 events are flagged prompt_injection or jailbreak, their rate is at least 3×
  the baseline period's, and the 5 most active flagged users send at least half of them; or
- the rule's own anomaly mass (at least 10) comes for at least half from 5 users who send
  under a tenth of the traffic — of the rule's population and of their own tenants' (one
  account harvesting PII, one user running up cost; a leak of one tenant reaches its
  busiest users first, and that is no attack).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from firebreak.core.events import Event
from firebreak.investigate.anomaly import Mass
from firebreak.investigate.model import Adversarial, UserShare

ATTACK_FLAGS = ("prompt_injection", "jailbreak")
TOP_USERS = 5
MIN_FLAGGED = 10
RATE_RISE = 3.0
CONCENTRATED = 0.5
FEW_USERS_TRAFFIC = 0.1


def _attack_flagged(e: Event) -> bool:
    flags = e.data.get("flags")
    return isinstance(flags, dict) and any(flags.get(f) is True for f in ATTACK_FLAGS)


def adversarial_signs(
    incident: Sequence[Event], baseline: Sequence[Event], population: Sequence[Event], mass: Mass
) -> Adversarial:
    """``incident``/``baseline``: every inference event of the two periods; ``population``:
    the rule's events in the incident period (for the anomaly's own concentration)."""
    flagged = [e for e in incident if _attack_flagged(e)]
    base_flagged = sum(1 for e in baseline if _attack_flagged(e))
    rate = len(flagged) / len(incident) if incident else 0.0
    base_rate = (base_flagged + 1) / (len(baseline) + 1) if baseline else 0.0
    by_user = Counter(str(e.data.get("user")) for e in flagged if e.data.get("user") is not None)
    by_tenant = Counter(str(e.data.get("tenant")) for e in flagged if e.data.get("tenant") is not None)
    top_users = by_user.most_common(TOP_USERS)
    top_share = sum(c for _, c in top_users) / len(flagged) if flagged else 0.0
    rise = rate / base_rate if base_rate else 0.0
    reasons = []
    attack = len(flagged) >= MIN_FLAGGED and rise >= RATE_RISE and top_share >= CONCENTRATED
    if attack:
        reasons.append(
            f"{len(flagged)} events flagged prompt_injection/jailbreak ({rise:.1f}× the baseline rate); "
            f"{len(top_users)} users sent {top_share:.0%} of them"
        )
    # The anomaly's own concentration in a few users.
    weights: Counter[str] = Counter()
    traffic: Counter[str] = Counter()
    for e in population:
        user = e.data.get("user")
        if user is None:
            continue
        traffic[str(user)] += 1
        w = mass.weight(e.data)
        if w:
            weights[str(user)] += w
    total = sum(weights.values())
    heavy = weights.most_common(TOP_USERS)
    heavy_share = sum(w for _, w in heavy) / total if total else 0.0
    heavy_traffic = sum(traffic[u] for u, _ in heavy) / len(population) if population else 0.0
    # ... and few among their own tenants' users: a leak of one tenant reaches that tenant's
    # busiest users first, which is no attack.
    heavy_users = {u for u, _ in heavy}
    peers = {e.data.get("tenant") for e in population if str(e.data.get("user")) in heavy_users} - {None}
    peer_traffic = sum(1 for e in population if e.data.get("tenant") in peers)
    if peer_traffic:
        heavy_traffic = max(heavy_traffic, sum(traffic[u] for u in heavy_users) / peer_traffic)
    concentrated = total >= MIN_FLAGGED and heavy_share >= CONCENTRATED and heavy_traffic < FEW_USERS_TRAFFIC
    if concentrated:
        reasons.append(
            f"{len(heavy)} users account for {heavy_share:.0%} of the anomaly while sending "
            f"{heavy_traffic:.1%} of the traffic"
        )
    # Does the attack carry *this* anomaly? (an attack on one tenant during another tenant's
    # leak does not): the attacking users' part of the rule's anomaly mass.
    attackers = {u for u, _ in top_users}
    carried = sum(weights[u] for u in attackers) / total if total else 0.0
    if attack:
        reasons[0] += f"; they carry {carried:.0%} of this incident's anomaly"
    heaviest = heavy[0][0] if heavy else None
    candidates = [
        (top_share * carried, next(e for e in flagged if str(e.data.get("user")) == top_users[0][0]))
        if attack
        else (0.0, None),
        (heavy_share, next(e for e in population if str(e.data.get("user")) == heaviest and mass.weight(e.data)))
        if concentrated
        else (0.0, None),
    ]
    concentration, first = max(candidates, key=lambda c: c[0])
    return Adversarial(
        suspected=attack or concentrated,
        flagged=len(flagged),
        rate_rise=round(rise, 2),
        top_users=tuple(UserShare(u, round(c / len(flagged), 3), c) for u, c in top_users),
        top_tenants=tuple(UserShare(t, round(c / len(flagged), 3), c) for t, c in by_tenant.most_common(3)),
        anomaly_top_users=tuple(UserShare(u, round(w / total, 3), round(w, 3)) for u, w in heavy)
        if concentrated
        else (),
        why="; ".join(reasons) if reasons else "no concentration of attack flags or of the anomaly in a few users",
        anomaly_share_of_attackers=round(carried, 3),
        first_event=first.event_id if first else None,
        first_ts=first.ts if first else None,
        concentration=round(concentration, 3),
    )
