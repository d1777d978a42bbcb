"""``srpipe train``: EDSR training with exact resume, validation, EMA, mixed precision and DDP.

Modules: ``run`` (entry point :func:`srpipe.train.run.train`, run-directory selection), ``rundir``
(run-directory layout, ``config.toml``, ``metrics.csv``), ``loop`` (the iteration loop), ``batches``
(where training batches come from), ``optim`` (optimizer, schedule, loss, EMA), ``state``
(checkpoint/resume state and RNG), ``validate`` (validation and comparison pictures), ``distributed``
(torchrun/DDP setup), ``runtime`` (precision/memory-format choices, config checks, signals),
``meter`` (speed and loss bookkeeping), ``report`` (what a sitting did: ``TrainReport``). docs/train.md
describes it.
"""
