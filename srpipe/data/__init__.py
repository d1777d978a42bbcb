"""The data layer: HDF5 patch stores (``store``, ``recovery``, ``summary``), finding inputs
(``sources``), the per-image work of ``srpipe prepare`` (``work``; the stage itself is
:mod:`srpipe.prepare`), generated images (``synthetic``), LR degradations (``degrade``) and the
torch Datasets that feed training and validation (``dataset``).

Importing this package imports nothing heavy; import the submodules you need.
"""

from __future__ import annotations
