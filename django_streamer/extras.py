"""The optional dependencies: which extra installs each, and errors that say so.

Each optional part of the app needs a module that ``pip install
"django-streamer[<extra>]"`` brings. Without it, the part fails with an error
naming the extra (never a bare ``No module named ...``), and a system check
says so earlier for the parts the settings turn on (``checks.py``).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "install_hint", "missing", "require"]

# module -> (the distribution that provides it, the extra that installs it)
EXTRAS = {
    "prometheus_client": ("prometheus-client", "prometheus"),
    "redis": ("redis", "redis"),
    "zipstream": ("zipstream-ng", "zip"),
    "brotli": ("brotli", "compression"),
}
# Modules whose name another project also provides: ``pip install zipstream``
# installs an unrelated project with a ``zipstream`` module.
CONTESTED = {"zipstream"}


class MissingExtra(ImportError):
    """An optional dependency is not installed (or another project owns its name)."""


def install_hint(module: str) -> str:
    return f'pip install "django-streamer[{EXTRAS[module][1]}]"'


def missing(module: str) -> str | None:
    """Why ``module`` cannot be used here, naming the extra; None when it can."""
    distribution = EXTRAS[module][0]
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{distribution} is not installed: {install_hint(module)}"
    if module not in CONTESTED:
        return None
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return (
            f"the {module!r} module here is not {distribution}'s: pip uninstall the "
            f"package that provides it, then {install_hint(module)}"
        )
    return None


def require(module: str, *, feature: str) -> ModuleType:
    """``module``, or :class:`MissingExtra` saying that ``feature`` needs its extra."""
    problem = missing(module)
    if problem is not None:
        raise MissingExtra(f"{feature} needs {problem}", name=module)
    return importlib.import_module(module)
