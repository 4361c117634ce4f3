"""Bounded memos of pure functions, and one call that empties them all.

A memo changes no result, only speed, and each is bounded (an ``lru_cache`` maxsize, or
a dict cleared when full). A run that meets new prices fills them for hours, which a
heap check cannot tell from a leak; so a soak empties them before every heap snapshot
and measures what the run itself holds.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["clear_memos", "register_memo"]

_CLEARS: list[Callable[[], None]] = []


def register_memo(clear: Callable[[], None]) -> None:
    """Have :func:`clear_memos` call ``clear`` (a memo's ``cache_clear``, a dict's ``clear``)."""
    _CLEARS.append(clear)


def clear_memos() -> None:
    """Empty every registered memo; results stay the same, only slower until they refill."""
    for clear in _CLEARS:
        clear()
