"""Seeded latency between the strategy and the venue (issue 4 item 4).

Three legs: order entry (strategy → venue), cancel (strategy → venue) and response
(venue → strategy: acceptances, fills, cancels, expiries). Each draw is
``base + jitter``, where the jitter is uniform on ``[0, latency_jitter_ms]`` or
exponential with that mean, from the model's own generator seeded by the run's
seed (:mod:`perpsim.core.rng`; never unseeded). All zero (the default) means orders act at once:
the ``backtest`` semantics.

Requests share one channel, like one connection: an order or cancel never arrives
before one sent earlier (arrival = max(draw, previous arrival)); responses likewise
keep their order. The venue applies each arrival on the clock (a timer), so an
order acts on the market as the tape has made it by its arrival, never on the
state the strategy saw when it sent it.
"""

from __future__ import annotations

from typing import Final

from perpsim.core.config import VenueConfig
from perpsim.core.instruments import exact
from perpsim.core.rng import seeded

__all__ = ["LatencyModel"]

_MS: Final = 1_000_000


def _ns(ms: float) -> int:
    return round(exact(ms) * _MS)


class LatencyModel:
    """Draws arrival and response times; :attr:`enabled` is False when every leg is zero."""

    def __init__(self, cfg: VenueConfig, seed: int) -> None:
        self._entry = _ns(cfg.latency_ms)
        self._cancel = _ns(cfg.latency_ms if cfg.cancel_latency_ms is None else cfg.cancel_latency_ms)
        self._response = _ns(cfg.response_latency_ms)
        self._jitter_ms = float(cfg.latency_jitter_ms)
        self._dist = cfg.latency_dist
        self._rng = seeded(seed, "latency")
        self._last_request = 0
        self._last_response = 0
        self.requests_enabled = bool(self._entry or self._cancel or self._jitter_ms)
        self.responses_enabled = bool(self._response or self._jitter_ms)

    def _draw(self, base: int) -> int:
        if not self._jitter_ms:
            return base
        if self._dist == "exponential":
            j = float(self._rng.exponential(self._jitter_ms))
        else:
            j = float(self._rng.uniform(0.0, self._jitter_ms))
        return base + round(j * _MS)

    def entry(self, now: int) -> int:
        """When an order sent at ``now`` reaches the venue."""
        t = max(now + self._draw(self._entry), self._last_request)
        self._last_request = t
        return t

    def cancel(self, now: int) -> int:
        """When a cancel sent at ``now`` reaches the venue."""
        t = max(now + self._draw(self._cancel), self._last_request)
        self._last_request = t
        return t

    def response(self, now: int) -> int:
        """When a notification the venue sends at ``now`` reaches the strategy."""
        t = max(now + self._draw(self._response), self._last_response)
        self._last_response = t
        return t
