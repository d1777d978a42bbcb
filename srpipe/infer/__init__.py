"""Inference: the one tiled engine, its backends, the tile planner and blender, and the batch loop.

- ``upscaler``: ``TiledUpscaler``, one image (uint8/uint16, gray/RGB/RGBA) in, its upscaled copy out.
- ``backends``: the ``Backend`` protocol, ``TorchBackend``, and which backend runs an ONNX file.
- ``session``: the ONNX Runtime backend (providers, options, IO binding, foreign-model probe), model lookup.
- ``ovsession``: the OpenVINO backend (bf16 on CPUs that have it), in a worker process.
- ``tiling``: pure-numpy tile planner and weight-normalised overlap blending.
- ``receptive``: measuring a model's effective receptive field and deriving the tile overlap from it.
- ``measured``: the overlap of models that do not state it, measured once and cached.
- ``files``: walking inputs, mirroring the tree under ``--out``, output naming and path safety, sharding.
- ``manifest``: what made each output in ``--out``, so reruns redo exactly the stale outputs.
- ``runner``: the threaded loop of ``srpipe process`` (decode, upscale and encode overlap; one
  ``FileResult`` per file). The stage itself is :mod:`srpipe.process`.
"""
