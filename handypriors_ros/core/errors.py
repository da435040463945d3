"""Exception types shared across the core.

Every error the core raises on bad input derives from :class:`HandyPriorsError`, so a node can
catch the family per message, report it and keep running.
"""


class HandyPriorsError(Exception):
    """Base class of every error the core raises on bad input or state."""


class InputError(HandyPriorsError, ValueError):
    """An argument has the wrong shape, dtype, value or encoding; the message names it."""


class ModelError(HandyPriorsError):
    """A hand or object model cannot be loaded or is unusable (broken mesh, bad URDF)."""
