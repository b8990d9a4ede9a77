"""Venue quirks as data: what differs between exchanges in how the door must talk to them.

``exchange.client`` reads ``quirks_for(exchange_id)`` when it builds a ccxt instance and places
orders. Adding a venue means adding a row here, not a branch in the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class VenueQuirks:
    client_order_id_param: str = "clientOrderId"
    """The ``create_order`` param that carries our client order id."""
    fetch_by_client_id_param: str = "clientOrderId"
    """The ``fetch_order`` param that looks an order up by client order id."""
    reduce_only_param: bool = False
    """Whether the venue's spot API takes ``reduceOnly``; if not, reduce-only sells are clamped."""
    duplicate_order_markers: tuple[str, ...] = ()
    """Venue texts that mean "this client order id already exists", when ccxt has no class for it."""
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """ccxt ``options`` the door always sets for this venue."""


DEFAULT_QUIRKS = VenueQuirks()

_BINANCE_SPOT = VenueQuirks(
    client_order_id_param="newClientOrderId",
    fetch_by_client_id_param="origClientOrderId",
    reduce_only_param=False,
    duplicate_order_markers=("Duplicate order sent",),
    options=MappingProxyType(
        {
            # Spot only: the door trades spot, and loading futures markets would call fapi/dapi hosts.
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            # fetchCurrencies and margin pair lists are private sapi calls the door does not need.
            "fetchCurrencies": False,
            "fetchMargins": False,
            # The runner keeps its clock right; ccxt's adjustment would add a /time call at load.
            "adjustForTimeDifference": False,
            # The door asks for all open orders on resume and accepts the heavier request weight.
            "fetchOpenOrders": {"warnWithoutSymbol": False},
        }
    ),
)

VENUES: Mapping[str, VenueQuirks] = MappingProxyType(
    {
        "binance": _BINANCE_SPOT,
        "binanceus": _BINANCE_SPOT,
    }
)


def quirks_for(exchange_id: str) -> VenueQuirks:
    return VENUES.get(exchange_id, DEFAULT_QUIRKS)
