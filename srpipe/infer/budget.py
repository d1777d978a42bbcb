"""The memory budget of ``srpipe process``: what one file costs, estimated from its header.

A small file can decode to a huge image (a 164 KB PNG of 13000 × 13000 gray pixels), and its output
is ``scale²`` times larger still. ``process`` estimates, before decoding, the bytes a file needs and
refuses it (``failed``, naming ``--memory-budget``) when they exceed ``ProcessConfig.memory_budget``
MiB; the batch goes on. The estimate counts the image data, in two phases that do not overlap for
one file, and takes the larger:

- upscaling: the decoded image (and its split colour/alpha copies for RGBA), the float32 planes the
  model reads (RGB, 12 B per LR pixel, twice for RGBA plus their stacked copy), the blending band
  (``infer.tiling.Blender``: one row of tiles, full HR width, float32 sums and weights), the tile
  outputs, and the output array (channels × bytes per sample per HR pixel);
- encoding: the decoded image (its metadata is written with the output), the output array, and the
  encoder's copies: Pillow holds 8-bit RGB and RGBA as 4 B per pixel, gray as 1, 16-bit gray as 2;
  16-bit colour goes through OpenCV (a BGR copy, the encoder's buffers, the encoded buffer and its
  bytes: 4 × 2 B per channel, as measured); a 16-bit output written as 8-bit (JPEG, WebP) first
  goes through ``to_uint8``'s uint32 temporaries (8 B per channel).

The model's own working memory (a few hundred MB on the CPU for the default tile) comes on top, as
does the interpreter; ``process`` runs one file's upscaling while the previous file encodes, and it
waits for that encoding first when the two estimates together would exceed the budget
(``infer.runner``).
"""

from __future__ import annotations

import math

from srpipe.imaging.io import Layout

MIB = 1 << 20
_EIGHT_BIT = (".jpg", ".jpeg", ".webp", ".bmp")


def upscale_bytes(layout: Layout, scale: int, tile: int) -> int:
    """Bytes of image data held while one image of ``layout`` is upscaled (see the module docstring)."""
    h, w, ch, b = layout.height, layout.width, layout.channels, layout.itemsize
    lr, hr = h * w, h * w * scale * scale
    k = 2 if ch == 4 else 1  # model planes: colour, and alpha for RGBA
    c = 3 * k  # float32 channels through the model
    planes = lr * 12 * k * (2 if k == 2 else 1) + (lr * ch * b if ch == 4 else 0) + lr * 2
    th, tw = (min(tile, h), min(tile, w)) if tile else (h, w)
    band = th * scale * w * scale * (4 * c + 4)  # Σw·y and Σw over one row of tiles
    tiles = th * scale * tw * scale * c * 4 * 3  # the model's output, its transposed copy, y·w
    return lr * ch * b + planes + band + tiles + hr * ch * b


def encode_bytes(layout: Layout, scale: int, suffix: str) -> int:
    """Bytes held while the output of one image of ``layout`` is encoded to a ``suffix`` file."""
    ch, b = layout.channels, layout.itemsize
    lr = layout.height * layout.width
    hr = lr * scale * scale
    eight = suffix.lower() in _EIGHT_BIT
    if b == 2 and eight:
        per_px = ch * 8 + ch + (1 if ch == 1 else 4)  # to_uint8 temporaries, its result, Pillow's copy
    elif b == 2 and ch > 1:
        per_px = 4 * 2 * ch  # OpenCV: BGR copy, its encoder's buffers, the encoded buffer, its bytes
    else:
        per_px = b if ch == 1 else 4  # Pillow's own image
    return lr * ch * b + hr * ch * b + hr * per_px


def file_bytes(layout: Layout, scale: int, tile: int, suffix: str) -> int:
    """The estimate ``process`` compares with the budget: the larger of the two phases."""
    return max(upscale_bytes(layout, scale, tile), encode_bytes(layout, scale, suffix))


def over_budget_reason(layout: Layout, scale: int, needed: int, budget_mib: int) -> str:
    """The message for a file whose estimate is over the budget, naming the option value that admits it."""
    return (f"{layout.width}×{layout.height} {layout.name} at x{scale} makes a "
            f"{layout.width * scale}×{layout.height * scale} output that needs about "
            f"{needed / (1 << 30):.1f} GiB of memory for image data, over the memory budget of "
            f"{budget_mib} MiB; pass --memory-budget {math.ceil(needed / MIB)} if this machine has it")
