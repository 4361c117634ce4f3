"""One error tree for perpsim, split by blame.

::

    PerpsimError
    ├── InputError            bad input or configuration: the CLI exits 2
    │   ├── TapeError         a tape that cannot be read or fails validation
    │   ├── ConfigError       a profile, config, strategy or option that is wrong
    │   └── MoneyOutOfRange   an amount int64 ledger units cannot hold: the run stops
    └── CheckFailed           a check ran and failed (drift, soak, characterization): exit 1

Raise the most specific class, chain the cause with ``from``, and write a message
that names the thing, the place and the state ("x.parquet row 42 column price: NaN").
"""

from __future__ import annotations

__all__ = ["CheckFailed", "ConfigError", "InputError", "MoneyOutOfRange", "PerpsimError", "TapeError"]


class PerpsimError(Exception):
    """Base of every error perpsim raises on purpose."""

    exit_code = 1


class InputError(PerpsimError):
    """The caller gave something unusable; fix the input and run again."""

    exit_code = 2


class TapeError(InputError):
    """A tape is missing, unreadable or invalid; the message names file, row and column."""


class ConfigError(InputError):
    """A profile, config file, strategy or option is invalid; the message names the key."""


class MoneyOutOfRange(InputError):
    """An amount beyond int64 ledger units (prices, sizes or a balance out of scale).

    Never an ``error`` event that the run goes on after: the books could not record it."""


class CheckFailed(PerpsimError):
    """A check (drift, soak, characterization) ran to completion and did not pass."""

    exit_code = 1
