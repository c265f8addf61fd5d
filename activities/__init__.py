"""Activity functions: one small function per step, each calling a backend. Importing this
package registers them all on `bp`."""

from activities import (  # noqa: F401  (registers on bp)
    connection,
    cost_guard,
    dataset,
    evaluation,
    notify,
    preflight,
    reporting,
    serving,
    training,
    turns,
)
from activities.blueprint import bp

__all__ = ["bp"]
