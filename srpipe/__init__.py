"""srpipe: the EDSR super-resolution recipe as a batch pipeline (prepare, train, export, process)."""

from __future__ import annotations

__version__ = "0.1.0"
