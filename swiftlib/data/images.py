"""Image files -> RGB, faithfully, whatever the PIL mode the file decodes to.

No tensors: a file or a PIL image in, a PIL ``RGB`` image (uint8 ``[H, W, 3]`` as an array) out.
PIL's own ``convert("RGB")`` clips wide modes (a 16-bit grey PNG becomes almost all white) and drops
alpha (showing whatever colour hides under transparent pixels); :func:`to_rgb` does instead:

==========================  ==================================================================
mode                        becomes
==========================  ==================================================================
``RGB``                     itself
``I;16`` / ``I;16L`` ...    16-bit grey: tones scaled 0..65535 -> 0..255 (rounded), not clipped
``I`` (32-bit int)          the same 0..65535 scale when the values fit it, else min..max -> 0..255
``F`` (32-bit float)        0..1 -> 0..255 when the values fit it, kept when within 0..255, else
                            min..max -> 0..255
``RGBA`` ``LA`` ``La``      composited on white (:data:`ALPHA_BACKGROUND`): a transparent pixel is
``RGBa`` ``PA``, ``P`` +    white, an opaque one keeps its colour, the rest are blended
transparency
``P``, ``L``, ``1``,        PIL's conversion (palette lookup, grey replicated, 0/1 -> 0/255,
``CMYK``, ``YCbCr`` ...     CMYK by ``R = (255 - C)(255 - K) / 255``)
==========================  ==================================================================

:func:`open_rgb` opens, decodes and converts one file, turning every failure (missing file,
truncated data, unknown format) into a ValueError that names the file.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = ["ALPHA_BACKGROUND", "UnreadableImage", "to_rgb", "open_rgb"]

#: The colour transparent pixels are composited on.
ALPHA_BACKGROUND = (255, 255, 255)

_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")


class UnreadableImage(ValueError):
    """An image file that cannot be decoded: ``path`` and ``reason`` (``"<error type>: <message>"``)."""

    def __init__(self, path, reason: str):
        super().__init__(f"unreadable image {path}: {reason}")
        self.path, self.reason = str(path), reason


def _rescale(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``a`` mapped linearly from ``lo..hi`` to uint8 ``0..255`` (rounded; the same shape)."""
    span = max(hi - lo, 1e-12)
    return np.clip(np.rint((a.astype(np.float64) - lo) * (255.0 / span)), 0, 255).astype(np.uint8)


def _wide_to_grey(img: Image.Image) -> np.ndarray:
    """Grey uint8 ``[H, W]`` of a 16-bit, 32-bit int or float image, by the rules of the module table."""
    a = np.asarray(img)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not np.isfinite([lo, hi]).all():  # float images with nan / inf: the finite values set the range
        finite = a[np.isfinite(a)]
        a = np.nan_to_num(a, nan=0.0, posinf=finite.max(initial=0.0), neginf=finite.min(initial=0.0))
        lo, hi = float(a.min()), float(a.max())
    if img.mode.startswith("I;16"):
        return _rescale(a, 0, 65535)
    if img.mode == "I":
        return _rescale(a, 0, 65535) if lo >= 0 and hi <= 65535 else _rescale(a, lo, hi)
    if lo >= 0 and hi <= 1:
        return _rescale(a, 0, 1)
    return _rescale(a, 0, 255) if lo >= 0 and hi <= 255 else _rescale(a, lo, hi)


def _composite_on_background(img: Image.Image) -> Image.Image:
    """An image with alpha, composited on :data:`ALPHA_BACKGROUND`; RGB."""
    rgba = img.convert("LA").convert("RGBA") if img.mode == "La" else img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an RGB image that looks like it (see the module table); ``img`` itself when already RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_wide_to_grey(img)).convert("RGB")  # [H, W] -> [H, W, 3]
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        return _composite_on_background(img)
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise ValueError(f"PIL mode {mode!r} has no conversion to RGB ({err})") from err


def open_rgb(path: str | os.PathLike, draft: int | None = None) -> Image.Image:
    """Decode the image file ``path`` to RGB (:func:`to_rgb`); any failure is an :class:`UnreadableImage`
    (a ValueError) naming the file and why.

    ``draft``: for a JPEG, let the decoder downscale in the DCT domain to no less than
    ``draft`` x ``draft`` (much faster when the result is resized to about that size anyway).
    """
    try:
        with Image.open(path) as im:
            if draft is not None and im.format == "JPEG":
                im.draft("RGB", (draft, draft))
            im.load()
            return to_rgb(im)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise UnreadableImage(path, f"{type(err).__name__}: {err}") from err
