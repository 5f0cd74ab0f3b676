"""Image decoding for the file loaders: reduced-size JPEG decoding, uint8 out, normalise later.

The standard ImageNet transforms (``RandomResizedCrop(S)`` + flip for training,
``Resize(S * 256 / 224)`` + ``CenterCrop(S)`` for evaluation) throw most decoded
pixels away: a crop of an 800x600 photo is shrunk to 224x224. A JPEG can be decoded at
1/2, 1/4 or 1/8 of its size for a fraction of the cost (libjpeg's DCT scaling, PIL's
``Image.draft``). The transforms here

1. draw the crop exactly as torchvision does (``RandomResizedCrop.get_params`` on the
   full image size, then ``torch.rand(1) < 0.5`` for the flip, from the global RNG of the
   worker), so the augmentation distribution is unchanged;
2. decode at the largest reduction ``k`` in {8, 4, 2, 1} that keeps the crop at least
   ``S`` pixels on both sides (no pixel is upsampled that the full decode would not
   upsample) and the JPEG's colours (:func:`jpeg_factor_limit`); with ``k = 1`` the output
   equals torchvision's bit for bit;
3. return a uint8 ``(3, S, S)`` tensor (a quarter of float32's bytes through the worker
   queues and pinned memory), to be normalised in whole batches on the device by
   :func:`normalize_uint8`; ``output="float"`` normalises in the worker instead.

:class:`FastRandomResizedCrop` (the trainer's default, ``--image-decode fast``) goes
further: only the crop's region is decoded (:func:`jpeg_region`: libjpeg-turbo's partial
decompression, an optional C extension built at install time) or, without the extension,
libjpeg stops after the crop's last row (:func:`jpeg_rows`), and the crop is resized by
torch's uint8 kernel, stored channels-last (:func:`collate_channels_last`);
:mod:`~classbalanced.data.encoded` leaves the decoding to the device (nvJPEG on CUDA, in
batches). Speed: docs/benchmarks.md.

They take the image *before* it is decoded (``decodes = True``):
:class:`classbalanced.data.loaders.ImageFileDataset` passes the opened file; a truncated
file still raises inside the transform and is skipped there.

Example:
    >>> draft_factor(800, 600, 224)
    2
    >>> draft_factor(224, 230, 224), draft_factor(1800, 1800, 224)
    (1, 8)
    >>> x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    >>> normalize_uint8(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))[0, :, 0, 0]
    tensor([1., 1., 1.])
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile
from torch import Tensor
from torchvision.transforms import RandomResizedCrop  # here: forked loader workers inherit it
from torchvision.transforms.v2.functional import center_crop

from .images import to_rgb

#: the version of ``_jpegcrop.c``'s functions this module calls (its ``API_VERSION``)
_EXTENSION_API = 2


def _extension() -> Any:
    """``classbalanced.data._jpegcrop`` (built from _jpegcrop.c where libjpeg-turbo's headers
    were found at install time), or ``None``: not built, or built from an older _jpegcrop.c,
    whose functions take other arguments (an in-place build not redone: rebuild it)."""
    try:
        module = importlib.import_module("classbalanced.data._jpegcrop")
    except ImportError:  # pragma: no cover - depends on the install
        return None
    return module if getattr(module, "API_VERSION", None) == _EXTENSION_API else None


_jpegcrop = _extension()

#: whether :class:`FastRandomResizedCrop` decodes only the crop's region (the optional
#: libjpeg-turbo extension was built at install time, from this version of _jpegcrop.c);
#: without it, PIL's decoder (same pixels)
PARTIAL_JPEG_DECODING = _jpegcrop is not None

__all__ = [
    "draft_factor",
    "has_end_marker",
    "jpeg_factor_limit",
    "DraftRandomResizedCrop",
    "DraftResizeCenterCrop",
    "FastRandomResizedCrop",
    "CropParams",
    "draw_crop",
    "jpeg_rows",
    "jpeg_region",
    "PARTIAL_JPEG_DECODING",
    "collate_channels_last",
    "normalize_uint8",
]

_FACTORS = (8, 4, 2, 1)


def draft_factor(crop_w: float, crop_h: float, size: int, limit: int = 8) -> int:
    """The largest JPEG reduction ``k`` in {8, 4, 2, 1}, at most ``limit``, with
    ``crop / k >= size`` on both sides."""
    for k in _FACTORS:
        if k <= limit and crop_w / k >= size and crop_h / k >= size:
            return k
    return 1


def jpeg_factor_limit(layers: Sequence[tuple[Any, int, int, Any]]) -> int:
    """The largest reduction at which libjpeg's DCT-scaled decode keeps a JPEG's colours, from
    its components' ``(id, h, v, table)`` sampling factors (PIL's ``img.layer``): 8 for
    greyscale, 4:4:4 and 4:2:0; 4 for 4:2:2 and 4:4:0 (at 1/8 their colours move by 5 levels on
    average, up to 35); 1 for 4:1:1 (5-10 levels at 1/4 and 1/8, up to 90) and other samplings.

    >>> jpeg_factor_limit([(1, 2, 1, 0), (2, 1, 1, 1), (3, 1, 1, 1)])
    4
    """
    luma, chroma = tuple(layers[0][1:3]), {tuple(c[1:3]) for c in layers[1:]}
    if not chroma or (chroma == {(1, 1)} and luma in ((1, 1), (2, 2))):
        return 8
    return 4 if chroma == {(1, 1)} and luma in ((2, 1), (1, 2)) else 1


def _factor_limit(img: Image.Image) -> int:
    layers = getattr(img, "layer", None)
    return jpeg_factor_limit(layers) if img.format in ("JPEG", "MPO") and layers else 8


def _decode(img: Image.Image, k: int) -> tuple[Image.Image, float, float]:
    """Decode ``img`` (reduced by ``k`` when it is a JPEG) to RGB; return it and its x / y scale.

    A JPEG libjpeg cannot decode reduced (lossless JPEG: no DCT to scale) is decoded at full
    size from its file again; one that fails at full size too raises (truncated, broken).
    """
    w, h = img.size
    # to read again (PIL closes its own file on a failure); None: an image made in memory
    source = getattr(img, "filename", "") or getattr(img, "fp", None)
    if k > 1:
        img.draft("RGB", (w // k, h // k))  # a no-op for other formats
    try:
        img.load()  # the full decode: a truncated file raises here
    except OSError:
        if k == 1 or source is None:
            raise
        img = _full_size(source)
    rgb = to_rgb(img)
    return rgb, rgb.size[0] / w, rgb.size[1] / h


def _full_size(source: Any) -> Image.Image:
    """The image in ``source`` (a path, or a file object read from its start) decoded."""
    if hasattr(source, "seek"):
        source.seek(0)
    img = Image.open(source)
    img.load()
    return img


def _to_tensor(img: Image.Image) -> Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class _Output:
    """A ``size`` x ``size`` image out: uint8, or float normalised with ``mean`` / ``std`` (for
    loaders that expect it)."""

    decodes = True

    def __init__(self, size: int, output: str, mean: Sequence[float], std: Sequence[float]) -> None:
        if output not in ("uint8", "float"):
            raise ValueError(f"output: expected 'uint8' or 'float', got {output!r}")
        if size < 1:
            raise ValueError(f"size: expected a positive integer, got {size}")
        self.size, self.output, self.mean, self.std = size, output, tuple(mean), tuple(std)

    def _finish(self, img: Image.Image) -> Tensor:
        x = _to_tensor(img)
        if self.output == "uint8":
            return x
        return normalize_uint8(x[None], self.mean, self.std)[0]


class _RandomCrop(_Output):
    """The settings of ``RandomResizedCrop(size, scale, ratio)`` + flip, checked once."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        *,
        flip: bool = True,
        output: str = "uint8",
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__(size, output, mean, std)
        self.scale, self.ratio, self.flip = scale, ratio, flip


class DraftRandomResizedCrop(_RandomCrop):
    """``RandomResizedCrop(size, scale, ratio)`` + ``RandomHorizontalFlip()`` of an undecoded image.

    Same random draws as torchvision's pair; bilinear resampling with antialiasing (PIL).
    """

    def __call__(self, img: Image.Image) -> Tensor:
        top, left, ch, cw = RandomResizedCrop.get_params(img, list(self.scale), list(self.ratio))
        flip = self.flip and bool(torch.rand(1) < 0.5)
        k = draft_factor(cw, ch, self.size, _factor_limit(img))
        rgb, fx, fy = _decode(img, k)
        out_size = (self.size, self.size)
        if fx == 1 and fy == 1:  # torchvision's own steps: crop, then resize
            out = rgb.crop((left, top, left + cw, top + ch)).resize(
                out_size, Image.Resampling.BILINEAR
            )
        else:
            box = (left * fx, top * fy, (left + cw) * fx, (top + ch) * fy)
            out = rgb.resize(out_size, Image.Resampling.BILINEAR, box=box)
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self._finish(out)


#: an image whose resized size is over this many ``resize ** 2`` (more than 16 times as long as
#: wide) has only its centre resized: torchvision's full resize of a 1 x 60000 strip to short
#: side 256 takes 12 GB
_FULL_RESIZE_LIMIT = 16


class DraftResizeCenterCrop(_Output):
    """``Resize(resize)`` (short side) + ``CenterCrop(size)`` of an undecoded image, as torchvision
    (bit for bit without a reduced decode); an image more than 16 times as long as wide has only
    the centre crop's region resized (PIL's ``box``: within a level or two of torchvision's).
    """

    def __init__(
        self,
        size: int,
        resize: int | None = None,
        *,
        output: str = "uint8",
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__(size, output, mean, std)
        self.resize = resize if resize is not None else int(size * 256 / 224)

    def __call__(self, img: Image.Image) -> Tensor:
        w, h = img.size
        short, long = min(w, h), max(w, h)
        new_long = int(self.resize * long / short)  # torchvision's rounding
        new_w, new_h = (self.resize, new_long) if w <= h else (new_long, self.resize)
        rgb, fx, fy = _decode(img, draft_factor(short, short, self.resize, _factor_limit(img)))
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        if new_w * new_h > _FULL_RESIZE_LIMIT * self.resize**2 and top >= 0 and left >= 0:
            sx, sy = rgb.size[0] / new_w, rgb.size[1] / new_h  # resize the centre only
            box = (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)
            return self._finish(
                rgb.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
            )
        resized = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if top < 0 or left < 0:  # smaller than the crop: torchvision pads with zeros
            return self._finish(center_crop(resized, [self.size, self.size]))
        return self._finish(resized.crop((left, top, left + self.size, top + self.size)))


class CropParams(NamedTuple):
    """One ``RandomResizedCrop`` draw in pixels of the full image, and the flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def draw_crop(img: Image.Image, scale, ratio, flip: bool) -> CropParams:
    """torchvision's draws from the global RNG: ``RandomResizedCrop.get_params`` on the header
    size (nothing is decoded), then ``torch.rand(1) < 0.5`` for the flip when ``flip``."""
    top, left, h, w = RandomResizedCrop.get_params(img, list(scale), list(ratio))
    return CropParams(top, left, h, w, flip and bool(torch.rand(1) < 0.5))


def has_end_marker(data: bytes) -> bool:
    """A complete JPEG ends with EOI (``FF D9``), possibly followed by a little padding."""
    return b"\xff\xd9" in data[-64:]


def _well_formed(data: bytes) -> bool:
    """The JPEG's segments chain from SOI to EOI: each marker segment's length leads to the next
    marker, and each scan's entropy-coded data (``FF`` followed only by ``00``, fill ``FF`` or a
    restart marker) ends at one. A marker written over the data breaks the chain: a broken file
    that a decode stopped at the crop's last row would not see fail. ~80 us for 140 KB; the
    libjpeg extension's ``well_formed`` (the same walk in C) ~10 us.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    after = arr[ff + 1]
    markers = ff[(after != 0) & (after != 0xFF) & ((after < 0xD0) | (after > 0xD7))]
    pos, n = 2, len(data)
    while pos + 1 < n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return True
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker < 0xC0 or 0xD0 <= marker <= 0xD8 or length < 2:
            return False
        pos += 2 + length
        if marker == 0xDA:  # SOS: the entropy-coded data runs to the next marker
            i = int(np.searchsorted(markers, pos))
            if i == len(markers):
                return False
            pos = int(markers[i])
    return False


def _jpeg_bytes(img: ImageFile.ImageFile) -> bytes | None:
    """The whole file of JPEG ``img`` if it is complete: an end marker that its segments
    chain to (:func:`_well_formed`); ``None`` otherwise (or once PIL has closed the file)."""
    if img.fp is None:
        return None
    img.fp.seek(0)
    data = img.fp.read()
    if not has_end_marker(data):
        return None
    return data if (_jpegcrop.well_formed if _jpegcrop else _well_formed)(data) else None


def jpeg_rows(img: Image.Image, k: int, bottom: float) -> Image.Image | None:
    """JPEG ``img`` decoded at ``1 / k`` (libjpeg's DCT scaling) down to the row that holds
    row ``bottom`` of the full-size image (rounded to the nearest reduced row): libjpeg stops
    there, so the rows below are never entropy-decoded. The rows are bit for bit those of
    the full decode at that scale (``img.draft``).

    ``None`` where this does not apply (not an RGB JPEG, no end marker, segments that do not
    chain to it: the caller decodes the usual way, which raises on a truncated or broken file). Uses
    PIL's decoder object (``Image._getdecoder``): a PIL without it takes the usual way too.
    Also ``None`` where libjpeg gave up before the last row (its stop there and an error
    both end PIL's decode with the same status: the last row is checked for a pattern
    written before the decode): a bogus Huffman table, or a progressive file broken anywhere
    (its whole data is read before the first row), which the usual decode then refuses;
    and where a decode at ``1 / k`` (``k > 1``) fails outright: broken, or a JPEG libjpeg
    cannot reduce (lossless), which the usual decode reads at full size.
    """
    getdecoder = getattr(Image, "_getdecoder", None)
    if (
        not isinstance(img, ImageFile.ImageFile)
        or img.format != "JPEG"
        or img.mode != "RGB"
        or getdecoder is None
        or len(img.tile) != 1
    ):
        return None
    data = _jpeg_bytes(img)
    if data is None:  # before ``draft``: the caller decodes ``img`` as is
        return None
    w, h = img.size
    if k > 1:
        img.draft("RGB", (w // k, h // k))
    (name, _extents, offset, args) = img.tile[0]
    width, height = img.size
    rows = max(1, min(height, math.floor(bottom * height / h + 0.5)))
    decoder = getdecoder(img.mode, name, args, img.decoderconfig)
    out = Image.core.new("RGB", (width, rows))
    last = (0, rows - 1, width, rows)
    pattern = _unlikely_row(width)
    out.paste(Image.frombytes("RGB", (width, 1), pattern).im, last)
    decoder.setimage(out, (0, 0, width, rows))
    try:
        consumed, err = decoder.decode(data[offset:])
    finally:
        decoder.cleanup()
    # stopped early: (-1, -2) "too few scanlines read"; all rows: (-1, 0); >= 0: ran out of data
    if consumed >= 0 or (err < 0 and rows == height):
        if k > 1:  # broken, or a JPEG libjpeg cannot reduce (lossless): the caller decides
            return None
        raise OSError(f"broken JPEG data (decoder status {consumed}, {err})")
    decoded = img._new(out)
    if decoded.crop(last).tobytes() == pattern:  # the last row was never written
        return None
    return decoded


def _unlikely_row(width: int) -> bytes:
    """``width`` RGB pixels that no decode of a photo writes (a sawtooth over the channels)."""
    return ((np.arange(width * 3, dtype=np.uint32) * 89 + 13) % 251).astype(np.uint8).tobytes()


def _crop_box(p: CropParams, w: int, h: int, rw: int, rh: int) -> tuple[int, int, int, int]:
    """Crop ``p`` of a ``w`` x ``h`` image in whole pixels of its ``rw`` x ``rh`` decode (at
    ``1 / k``: libjpeg's ``ceil(w / k)`` x ``ceil(h / k)``), at least one pixel on each side."""
    fx, fy = rw / w, rh / h
    x0, y0 = math.floor(p.left * fx + 0.5), math.floor(p.top * fy + 0.5)
    x1 = min(rw, max(x0 + 1, math.floor((p.left + p.width) * fx + 0.5)))
    y1 = min(rh, max(y0 + 1, math.floor((p.top + p.height) * fy + 0.5)))
    return x0, y0, x1, y1


def jpeg_region(img: Image.Image, k: int, box: tuple[int, int, int, int]) -> Tensor | None:
    """The ``box`` = ``(x0, y0, x1, y1)`` region of JPEG ``img`` decoded at ``1 / k``, as a
    uint8 ``(y1 - y0, x1 - x0, 3)`` RGB tensor, bit for bit that region of the full decode
    at that scale (``img.draft``), by libjpeg-turbo's partial decompression: the inverse DCT,
    upsampling and colour conversion run only on the columns around the box and the rows
    from its first one, the entropy decoding stops at its last row.

    ``None`` where this does not apply: the extension was not built
    (:data:`PARTIAL_JPEG_DECODING`), not an RGB or greyscale JPEG, an incomplete file (see
    :func:`jpeg_rows`), data libjpeg warns about (or a progressive file cut short at a scan
    boundary, whose missing coefficients libjpeg's versions estimate differently), or data
    it refuses (broken, or a kind that PIL's own libjpeg may know and the system's not, such
    as lossless JPEG): the caller decodes the usual way, which decides. Where that way reads
    the whole file (greyscale: :func:`jpeg_rows` takes RGB only; a box down to the last row),
    this decode reads on to the end marker too, so that a file broken below the box fails
    here as there.
    """
    if _jpegcrop is None or img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return None
    if not isinstance(img, ImageFile.ImageFile):  # format is set on files only
        return None
    data = _jpeg_bytes(img)
    if data is None:
        return None
    try:
        region = _jpegcrop.decode_region(data, k, *box, img.mode != "RGB")
    except OSError:
        return None
    if region is None:
        return None
    x0, y0, x1, y1 = box
    return torch.frombuffer(region, dtype=torch.uint8).view(y1 - y0, x1 - x0, 3)


def _resized_crop(hwc: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of uint8 ``(H, W, 3)`` ``hwc`` to ``(3, size, size)``
    (``F.interpolate``'s channels-last uint8 kernel), stored HWC (channels-last).

    The kernel's own output is NCHW (its channels-last result copied over); it writes a
    channels-last ``out=`` as it is, which saves that copy and the one back (~0.3 ms at
    224 px); a torch without that overload takes ``F.interpolate`` (the same pixels).
    """
    x = hwc.permute(2, 0, 1)[None]
    out = torch.empty((1, size, size, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    try:
        torch.ops.aten._upsample_bilinear2d_aa.out(x, [size, size], False, None, None, out=out)
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - older torch
        aa = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        out.copy_(aa)
    return out[0]


class FastRandomResizedCrop(_RandomCrop):
    """``RandomResizedCrop(size, scale, ratio)`` + flip of an undecoded image, decoding only
    what the crop needs.

    1. The crop and flip are drawn from the header size (:func:`draw_crop`: torchvision's
       draws, so the augmentation distribution is unchanged).
    2. The JPEG is decoded at the largest reduction ``k`` in {8, 4, 2, 1} that keeps the
       crop >= ``size`` pixels on both sides, and only the crop's region
       (:func:`jpeg_region`, where the libjpeg extension is built and ``partial=True``) or
       only down to the crop's last row (:func:`jpeg_rows`: PIL's decoder); other files
       are decoded whole. The pixels are the same either way.
    3. The crop (rounded to whole pixels of the reduced image: at most ``k / 2`` original
       pixels at each edge, none when ``k = 1``) is resized with torch's antialiased
       bilinear kernel on uint8, and flipped.

    Against torchvision (PIL's resize of the fully decoded image) pixels differ by the
    reduced decoding where ``k > 1`` and by the two resize kernels' rounding (a level or
    two of 255 at a few pixels; tested). Output: uint8 ``(3, size, size)`` stored
    channels-last (use :func:`collate_channels_last`), or float normalised in the worker.
    """

    def __init__(self, *args: Any, partial: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.partial = partial  # False: PIL's decoder even where the extension is built

    def __call__(self, img: Image.Image) -> Tensor:
        return self.apply(img, draw_crop(img, self.scale, self.ratio, self.flip))

    def _crop(self, img: Image.Image, p: CropParams) -> Tensor:
        """The crop ``p`` of ``img`` as uint8 ``(H, W, 3)``, decoded at the largest reduction."""
        w, h = img.size
        k = draft_factor(p.width, p.height, self.size, _factor_limit(img))
        if self.partial:
            region = jpeg_region(img, k, _crop_box(p, w, h, -(-w // k), -(-h // k)))
            if region is not None:
                return region
        decoded = jpeg_rows(img, k, p.top + p.height)
        if decoded is None:
            decoded = _decode(img, k)[0]
            whole = decoded.size  # 1 / k for a JPEG, the header size for other files
        else:  # ``decoded`` holds the top rows of the whole image at 1 / k
            whole = img.size
        x0, y0, x1, y1 = _crop_box(p, w, h, *whole)
        return torch.from_numpy(np.array(decoded.crop((x0, y0, x1, min(y1, decoded.size[1])))))

    def apply(self, img: Image.Image, p: CropParams) -> Tensor:
        """The crop ``p`` (drawn on ``img``'s header size) of ``img``, decoded as needed."""
        hwc = _resized_crop(self._crop(img, p), self.size).permute(1, 2, 0)
        if p.flip:
            hwc = hwc.flip(1)
        out = hwc.contiguous().permute(2, 0, 1)  # stored HWC: a channels-last view
        if self.output == "uint8":
            return out
        return normalize_uint8(out[None], self.mean, self.std)[0]


def collate_channels_last(batch: Sequence[Any]) -> tuple[Tensor, Tensor, int]:
    """:func:`classbalanced.data.loaders.collate_skip_bad` stacking in HWC order: the images come
    out ``(N, 3, H, W)`` in channels-last memory (one copy per image, no transposition when
    the items are channels-last views, as :class:`FastRandomResizedCrop` makes them).

    >>> x = torch.arange(12, dtype=torch.uint8).view(3, 2, 2)
    >>> images, labels, skipped = collate_channels_last([(x, 1), None, (x + 1, 0)])
    >>> images.is_contiguous(memory_format=torch.channels_last), labels.tolist(), skipped
    (True, [1, 0], 1)
    >>> torch.equal(images[1], x + 1)
    True
    """
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    images = torch.stack([torch.as_tensor(img).permute(1, 2, 0) for img, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return images.permute(0, 3, 1, 2), labels, skipped


def normalize_uint8(
    images: Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
) -> Tensor:
    """``(x / 255 - mean) / std`` per channel of uint8 ``images (N, 3, H, W)``, on their device.

    One fused multiply-add per pixel (``x * a - b``); run it on the GPU after the copy so
    that workers and host-to-device copies move uint8.
    """
    if images.ndim != 4 or images.shape[1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"expected images (N, {len(mean)}, H, W) and {len(mean)} means / stds, got "
            f"{tuple(images.shape)}, {len(mean)} and {len(std)}"
        )
    if any(s <= 0 or not math.isfinite(s) for s in std):
        raise ValueError(f"std: expected positive values, got {tuple(std)}")
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    a = (1.0 / (255.0 * s)).to(dtype=dtype, device=images.device)[None, :, None, None]
    b = (m / s).to(dtype=dtype, device=images.device)[None, :, None, None]
    return torch.addcmul(-b, images.to(dtype), a)
