"""Invalid config values as one clear line.

A settings dataclass raises `SettingsError` from `__post_init__` with one line naming the valid values. The command
line builds settings through jsonargparse, which wraps such an error in chained "does not validate against any of the
Union subtypes" errors; `settings_error` finds the original one again, so the command line can print that line alone.

    try:
        cli = IAPOCLI(...)
    except ValueError as error:
        cause = settings_error(error)
        if cause is None:
            raise
        raise SystemExit(f"error: {cause}") from None
"""

from __future__ import annotations


class SettingsError(ValueError):
    """A setting with an invalid value; the message is one line that names the valid values."""


def settings_error(error: BaseException) -> SettingsError | None:
    """The `SettingsError` at the root of `error`'s chain of causes (itself included), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, SettingsError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
