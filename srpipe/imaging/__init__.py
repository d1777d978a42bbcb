"""Image files and pixels: faithful I/O (``io``), EXIF/ICC metadata (``metadata``), atomic writes
(``atomic``), colour helpers (``color``), MATLAB-exact bicubic resizing (``resize``). Import from the
submodules; nothing is re-exported here."""
