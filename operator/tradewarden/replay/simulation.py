"""The replay loop: feed recorded bars through fresh strategies, simulate fills, mark equity every bar.

Called by :func:`tradewarden.replay.engine.replay` with the bars :mod:`~tradewarden.replay.loading`
prepared. Pure and deterministic: no clock, no randomness, no I/O, and every iteration order is fixed.

The fill model mirrors the runner's paper broker closely enough that a faithful runner shows no
residual (its fills are compared with ours within ``max(2 * slippageBps, 1)`` bps):

* ``enter_long`` while flat buys at the bar's close moved ``slippageBps`` up, sized so that a fall to
  the decision's stop loses at most ``maxRiskPerTradePct`` of the replay's equity (fees aside), and never
  more than the cash buys (``ENTRY_CASH_HEADROOM``, as the runner clamps). An entry without a usable stop is
  not filled: the runner refuses it (``no_stop``).
* ``exit_long`` while long sells the whole position at the close moved ``slippageBps`` down.
* The fee is ``feeBps`` of the notional, in the quote currency.
* Risk limits that depend on wall-clock time (order rates, notional windows, gaps) are not simulated;
  should they have blocked the runner, the difference shows as residuals.

In ``signals`` mode the runner places no orders and its positions never change, so the strategies are
fed the initial positions throughout and nothing is filled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tradewarden.api.market import ENTRY_CASH_HEADROOM, FLAT, Action, Candle, Decision, Position
from tradewarden.replay.loading import PreparedExport
from tradewarden.strategies.safe import SafeStrategy

#: (t, symbol, action, stop) of every non-hold decision the replay took in the window.
DecisionRow = tuple[int, str, str, float | None]
#: (t, symbol, side, price, amount, fee) of every fill the replay simulated.
FillRow = tuple[int, str, str, float, float, float]

_HOLD = Action.HOLD
_ENTER = Action.ENTER_LONG
_EXIT = Action.EXIT_LONG


@dataclass(frozen=True, slots=True)
class Simulation:
    """What the loop produced: decisions, fills, and the equity after every bar (first point: the start)."""

    decisions: list[DecisionRow]
    fills: list[FillRow]
    equity: list[float]
    bars: int


class _Book:
    """Cash and positions of the simulated account. Touched only on the rare non-hold decision."""

    __slots__ = ("cash", "closes", "fee_rate", "fills", "positions", "risk_pct", "simulate", "slip", "symbols")

    def __init__(self, prepared: PreparedExport, starting_equity: float, risk_pct: float, fee_bps: float,
                 slippage_bps: float) -> None:
        self.symbols = [s.symbol for s in prepared.symbols]
        self.positions = [s.position for s in prepared.symbols]
        # Initial positions are marked at the last warm-up close (their entry price without one), so
        # that the equity at windowStart is exactly the exported startingEquity.
        self.closes = [s.warmup[-1].close if s.warmup else s.position.entry_price for s in prepared.symbols]
        held = sum(p.qty * c for p, c in zip(self.positions, self.closes, strict=True))
        self.cash = starting_equity - held
        self.risk_pct = risk_pct
        self.fee_rate = fee_bps / 10_000
        # Written as the paper broker writes it, so that the same close gives the same float.
        self.slip = slippage_bps / 10_000
        self.simulate = prepared.simulate
        self.fills: list[FillRow] = []

    def equity(self) -> float:
        cash = self.cash
        for position, close in zip(self.positions, self.closes, strict=True):
            if position.qty > 0.0:
                cash += position.qty * close
        return cash

    def act(self, t: int, i: int, decision: Decision, close: float) -> None:
        """Fill ``decision`` for symbol ``i`` at this bar's ``close``, if it leads to an order at all."""
        if not self.simulate:
            return
        position = self.positions[i]
        action = decision.action
        if action is _ENTER and position.qty <= 0.0:
            stop = decision.stop_price
            price = close * (1 + self.slip)
            if stop is None or not stop < price:
                return
            budget = self.equity() * self.risk_pct / 100.0
            if budget <= 0.0:
                return
            # Never more than the cash buys, with the headroom the runner keeps too.
            amount = min(budget / (price - stop), self.cash * ENTRY_CASH_HEADROOM / (price * (1 + self.fee_rate)))
            notional = amount * price
            fee = notional * self.fee_rate
            if amount <= 0.0 or notional + fee > self.cash:
                return
            self.cash -= notional + fee
            self.positions[i] = Position(amount, price)
            self.fills.append((t, self.symbols[i], "buy", price, amount, fee))
        elif action is _EXIT and position.qty > 0.0:
            price = close * (1 - self.slip)
            amount = position.qty
            notional = amount * price
            fee = notional * self.fee_rate
            self.cash += notional - fee
            self.positions[i] = FLAT
            self.fills.append((t, self.symbols[i], "sell", price, amount, fee))


def simulate(prepared: PreparedExport, strategies: list[SafeStrategy], *, starting_equity: float,
             risk_pct: float, fee_bps: float, slippage_bps: float) -> Simulation:
    """Warm every strategy up, then replay the window bar by bar. ``strategies`` follow ``prepared.symbols``."""
    book = _Book(prepared, starting_equity, risk_pct, fee_bps, slippage_bps)
    # Warm-up bars are fed with the position at windowStart, as the runner does when it (re)builds a
    # strategy mid-run; their decisions are discarded, because they happened before the window.
    for bars, strategy, position in zip(prepared.symbols, strategies, book.positions, strict=True):
        on_candle = strategy.on_candle
        for candle in bars.warmup:
            on_candle(candle, position)

    decisions: list[DecisionRow] = []
    equity = [book.equity()]
    if len(prepared.symbols) == 1:
        count = _single(prepared.symbols[0].window, strategies[0].on_candle, book, decisions, equity)
    else:
        count = _merged(prepared, strategies, book, decisions, equity)
    return Simulation(decisions=decisions, fills=book.fills, equity=equity, bars=count)


def _single(window: list[Candle], on_candle: Callable[[Candle, Position], Decision], book: _Book,
            decisions: list[DecisionRow], equity: list[float]) -> int:
    """The hot loop for one symbol: one strategy call, one identity test and one append per bar."""
    symbol = book.symbols[0]
    position = book.positions[0]
    qty = position.qty
    cash = book.cash
    append = equity.append
    for candle in window:
        decision = on_candle(candle, position)
        if decision.action is not _HOLD:
            close = candle.close
            book.closes[0] = close
            decisions.append((candle.ts, symbol, decision.action.value, decision.stop_price))
            book.act(candle.ts, 0, decision, close)
            position = book.positions[0]
            qty = position.qty
            cash = book.cash
        append(cash + qty * candle.close if qty > 0.0 else cash)
    return len(window)


def _merged(prepared: PreparedExport, strategies: list[SafeStrategy], book: _Book,
            decisions: list[DecisionRow], equity: list[float]) -> int:
    """Several symbols: bars merged by (t, symbol name), equity marked once per timestamp."""
    events: list[tuple[int, int, Candle]] = []
    for i, bars in enumerate(prepared.symbols):
        events.extend((c.ts, i, c) for c in bars.window)
    # Symbols are sorted by name, so sorting on (t, index) is sorting on (t, symbol name).
    events.sort(key=lambda e: (e[0], e[1]))
    calls = [s.on_candle for s in strategies]
    symbols = book.symbols
    positions = book.positions
    closes = book.closes
    current_t: int | None = None
    for t, i, candle in events:
        if t != current_t:
            if current_t is not None:
                equity.append(book.equity())
            current_t = t
        closes[i] = candle.close
        decision = calls[i](candle, positions[i])
        if decision.action is not _HOLD:
            decisions.append((t, symbols[i], decision.action.value, decision.stop_price))
            book.act(t, i, decision, candle.close)
    if current_t is not None:
        equity.append(book.equity())
    return len(events)
