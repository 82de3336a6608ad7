"""Holding pre-emption signals while a file that marks progress is written.

On SLURM, pre-emption and time-outs arrive as SIGTERM and SIGUSR2; submitit's USR2 handler
requeues the job and exits it with `sys.exit`. If that handler runs in the middle of a checkpoint
write, the exit is raised inside the writer (e.g. `torch.save`'s zip writer), whose clean-up can
replace it with another error: the job then reports a failure although SLURM has requeued it.
`held_signals()` records such signals while the block runs and delivers them, in order, to the
handlers that were installed before, right after it: the write completes, then the job requeues.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


@contextlib.contextmanager
def held_signals(signums: Sequence[int] = PREEMPTION_SIGNALS) -> Iterator[list[int]]:
    """Defer `signums` (Python-level handlers) until the block ends, then raise each one received.
    Yields the list of signals received so far. Outside the main thread (where Python handlers
    cannot be changed) it holds nothing."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    previous = {s: signal.getsignal(s) for s in signums}
    held = [s for s, h in previous.items() if h is not None]  # None: a handler not set from Python
    for s in held:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield pending
    finally:
        for s in held:
            signal.signal(s, previous[s])
        for s in pending:
            signal.raise_signal(s)
