"""Activity functions: one small function per step, each calling a backend. Importing this
package imports every module in it, which registers its activities on `bp` (a new module needs
no list to be added to)."""

import importlib
import pkgutil

from activities.wrapper import bp

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["bp"]
