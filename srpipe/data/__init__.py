"""The data layer: HDF5 patch stores (``store``), finding inputs (``sources``), ``srpipe prepare``
(``prepare``) and the torch Datasets that feed training and validation (``dataset``).

Importing this package imports nothing heavy; import the submodules you need.
"""

from __future__ import annotations
