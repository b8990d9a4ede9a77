"""The errors of the strategy layer.

Raised by the registry (``get_strategy``, ``validate_params``, ``build_strategy``) and by the
``SafeStrategy`` wrapper; caught by the controller (to set ``ConfigValid=False`` with a readable message),
by the runner (to stop new entries for a symbol whose strategy misbehaves) and by replay.
"""

from __future__ import annotations

from collections.abc import Iterable


class StrategyLayerError(Exception):
    """Base class of every error raised by ``tradewarden.strategies``."""


class UnknownStrategyError(StrategyLayerError, ValueError, LookupError):
    """A strategy key that is not in the registry.

    Consequence: the config that names it is invalid; the runner keeps its last good config. It is a
    ``ValueError`` so that a pydantic validator calling ``get_strategy`` turns it into a validation error,
    and a ``LookupError`` because that is what it is.
    """

    def __init__(self, key: str, known: Iterable[str]) -> None:
        self.key = key
        self.known = tuple(sorted(known))
        super().__init__(f"Invalid strategy key: {key} (known: {', '.join(self.known)})")


class StrategyParamsError(StrategyLayerError, ValueError):
    """Strategy params that its params model refuses.

    ``problems`` holds one ``(path, problem)`` pair per bad field, the path being ``params.<field>``;
    the message joins them with ``"; "`` so that a status condition shows every problem at once.
    Consequence: the config is invalid; fix the named fields.
    """

    def __init__(self, key: str, problems: Iterable[tuple[str, str]]) -> None:
        self.key = key
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{path}: {problem}" for path, problem in self.problems))


class StrategyError(StrategyLayerError):
    """Strategy code raised, or returned something that is not a valid ``Decision``.

    Raised only by ``SafeStrategy``. The strategy instance's state is undefined afterwards: the runner
    should stop new entries for ``symbol`` and rebuild the strategy (``build_strategy``) before trusting
    it again. ``detail`` is the original exception's text (or what was wrong with the returned value).
    """

    def __init__(self, key: str, symbol: str, detail: str) -> None:
        self.key = key
        self.symbol = symbol
        self.detail = detail
        super().__init__(f"strategy {key} on {symbol}: {detail}")
