"""jepa-core: a plugin framework for JEPA-family world models.

Only the pluggy markers live here so that ``import jepa_core`` stays cheap.
"""

import pluggy

__version__ = "0.1.0"

PROJECT = "jepa_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec", "__version__"]
