"""Activity functions: one small function per step, each calling a backend. Importing this
package registers them all on `bp`."""

from activities import connection, dataset, preflight, serving, training  # noqa: F401  (registers on bp)
from activities.blueprint import bp

__all__ = ["bp"]
