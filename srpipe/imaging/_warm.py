"""Imported by the process pools' forkserver (``srpipe.parallel.make_pool``) and nowhere else: it
loads the compiled resize kernel once, so that every worker forked from the server starts with it
instead of paying numba's start-up (about 0.6 s each) itself.

A failure here must not take the forkserver down (only ImportError is ignored there), so it is
logged and left for the workers, which compile on first use as usual.
"""

from __future__ import annotations

import logging

try:
    from srpipe.imaging.windowed import warm

    warm()
except Exception as exc:  # the forkserver must survive it (module docstring)
    logging.getLogger(__name__).warning("could not preload the resize kernel: %s", exc)
