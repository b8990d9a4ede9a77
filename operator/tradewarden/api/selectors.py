"""Which KillSwitches apply to a bot, and the kill mode that results.

Pure functions used by both sides of invariant 3: the runner (which watches KillSwitches itself, so a
switch works while the operator is down) and the operator (which folds the mode into status and the
runtime ConfigMap and counts acknowledgements). One implementation keeps the two from disagreeing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tradewarden.api.killswitch import KillSwitch, KillSwitchSelector, LabelSelector, SelectorOperator
from tradewarden.api.tradingbot import KILL_STRENGTH, KillMode


def label_selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics: every matchLabels pair and every expression must hold."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == SelectorOperator.IN and (not present or labels[req.key] not in req.values):
            return False
        if req.operator == SelectorOperator.NOT_IN and present and labels[req.key] in req.values:
            return False
        if req.operator == SelectorOperator.EXISTS and not present:
            return False
        if req.operator == SelectorOperator.DOES_NOT_EXIST and present:
            return False
    return True


def selector_matches(selector: KillSwitchSelector, namespace: str, labels: Mapping[str, str]) -> bool:
    """True when a bot in ``namespace`` with ``labels`` is in the switch's scope (empty selects all)."""
    if selector.namespaces and namespace not in selector.namespaces:
        return False
    return label_selector_matches(selector.bot_selector, labels)


@dataclass(frozen=True)
class KillVerdict:
    """The effective kill mode for one bot and the switches that produced it."""

    mode: KillMode
    reason: str
    sources: tuple[str, ...]


def effective_kill_mode(
    switches: Iterable[KillSwitch],
    namespace: str,
    labels: Mapping[str, str],
    bot_trip: KillMode = KillMode.OFF,
    bot_trip_reason: str = "",
) -> KillVerdict:
    """Fold every matching switch and the bot's own trip into one mode: the strongest wins."""
    best = KillMode(bot_trip)
    reason = bot_trip_reason if best != KillMode.OFF else ""
    sources: list[str] = ["bot"] if best != KillMode.OFF else []
    for ks in sorted(switches, key=lambda k: k.metadata.name):
        mode = ks.spec.mode
        if mode == KillMode.OFF or not selector_matches(ks.spec.selector, namespace, labels):
            continue
        sources.append(f"killswitch/{ks.metadata.name}")
        if KILL_STRENGTH[mode] > KILL_STRENGTH[best]:
            best = mode
            reason = ks.spec.reason or f"killswitch/{ks.metadata.name} engaged"
    return KillVerdict(mode=best, reason=reason, sources=tuple(sources))
