"""Inference: ONNX Runtime sessions, the tile planner and blender, the upscaler and the batch runner.

- ``session``: model metadata, model discovery, the ONNX Runtime session (providers, options, IO binding).
- ``tiling``: pure-numpy tile planner and weight-normalised overlap blending.
- ``upscaler``: ``OnnxUpscaler``, one image (uint8/uint16, gray/RGB/RGBA) in, its upscaled copy out.
- ``receptive``: measuring a model's effective receptive field and deriving the tile overlap from it.
- ``files``: walking inputs, mirroring the tree under ``--out``, output naming and path safety, sharding.
- ``manifest``: what made each output in ``--out``, so reruns redo exactly the stale outputs.
- ``runner``: ``srpipe process`` (threads for decode/encode, per-file isolation, report).
"""
