"""The evaluation transform of an image folder, with Pillow and numpy only (no torch: decode workers stay light)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .errors import UserError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# name -> (resize, crop, mean, std); None: no resize, no crop, no mean/std (inputs x / 255)
PRESETS = {"imagenet": (256, 224, IMAGENET_MEAN, IMAGENET_STD), "cifar": (32, 32, CIFAR_MEAN, CIFAR_STD),
           "asis": (None, None, None, None)}


@dataclass(frozen=True)
class Transform:
    """Resize the short side to `resize`, cut the centre `crop` x `crop`, keep uint8 RGB; on the device each
    batch becomes `(x / 255 - mean) / std`.

    This is torchvision's `Compose([Resize(resize), CenterCrop(crop), ToTensor(), Normalize(mean, std)])` on
    the images `ImageFolder`'s loader gives (`Image.open(f).convert("RGB")`: grayscale replicated, CMYK
    converted, alpha dropped), done the way torchvision does it on PIL images: `Resize` calls
    `img.resize((w', h'), Image.BILINEAR)` with the short side `resize` and the long side
    `int(resize * long / short)` (Pillow's bilinear filter widens its support by the scale factor when it
    shrinks: the `antialias=True` behaviour); `CenterCrop` cuts from `int(round((h - crop) / 2))`,
    `int(round((w - crop) / 2))`; `ToTensor` divides the uint8 crop by 255. With the same Pillow the uint8
    crop is byte for byte torchvision's, so only the float normalisation is left to the device.
    """

    resize: int | None
    crop: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def parse(cls, preset: Any, resize: Any = None, crop: Any = None, mean: Any = None, std: Any = None) -> Transform:
        """A preset (`imagenet`, `cifar`, `asis`) with any of its four values replaced (None: the preset's)."""
        if preset not in PRESETS:
            raise UserError(f"data.transform '{preset}' is unknown: use {', '.join(PRESETS)}")
        base = PRESETS[preset]
        for key, value in (("resize", resize), ("crop", crop)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"data.{key} is {value!r}: use a side in pixels of 1 or more, or null (the preset's)")
        mean, std = (tuple(v) if v is not None else b for v, b in ((mean, base[2]), (std, base[3])))
        for key, value in (("mean", mean), ("std", std)):
            if value is not None and (len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)):
                raise UserError(f"data.{key} is {list(value)}: give three numbers (R, G, B), or null")
        if (mean is None) != (std is None) or (std is not None and min(std) <= 0):
            raise UserError(f"data.mean {mean} and data.std {std}: give both (std above 0), or neither")
        side, square = base[0] if resize is None else resize, base[1] if crop is None else crop
        if side and square and square > side:  # the short side after the resize cannot hold the crop
            raise UserError(f"data.crop {square} is larger than data.resize {side} (the short side after "
                            "resizing): make the crop at most the resize")
        return cls(side, square, mean, std)

    def describe(self) -> str:
        steps = [f"resize short side {self.resize}" if self.resize else "no resize",
                 f"centre crop {self.crop}" if self.crop else "no crop",
                 f"mean {list(self.mean)} std {list(self.std)}" if self.mean else "x / 255"]
        return ", ".join(steps)

    def resized(self, w: int, h: int) -> tuple[int, int]:
        """The size after the resize (torchvision's `_compute_resized_output_size` for an int size)."""
        if not self.resize:
            return w, h
        short, long = min(w, h), max(w, h)
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if w <= h else (new_long, self.resize)

    def output_size(self, w: int, h: int) -> tuple[int, int]:
        """(W, H) of what an image of size w x h becomes."""
        return (self.crop, self.crop) if self.crop else self.resized(w, h)

    def apply(self, img: Image.Image) -> np.ndarray:
        """uint8 (3, H, W) of an opened image; ValueError if it is smaller than the crop."""
        img = img.convert("RGB")
        size = self.resized(*img.size)
        if size != img.size:
            img = img.resize(size, Image.BILINEAR)
        if self.crop:
            w, h = img.size
            if w < self.crop or h < self.crop:
                raise ValueError(f"it is {w}x{h} after resizing, smaller than the {self.crop}x{self.crop} crop")
            top, left = int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))
            img = img.crop((left, top, left + self.crop, top + self.crop))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def decode(path: str, transform: Transform) -> np.ndarray:
    """One image file as uint8 (3, H, W); a UserError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return transform.apply(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"image {path} cannot be decoded ({first_line(err)}); replace or remove it: every image of the "
                        "folder is evaluated") from None


def decode_many(job: tuple[list[str], Transform, tuple[int, int]]) -> np.ndarray | str:
    """A decode worker's task: the images as (N, 3, H, W) of the cache's (W, H), or the one line naming a bad file."""
    paths, transform, (w, h) = job
    out = np.empty((len(paths), 3, h, w), dtype=np.uint8)
    try:
        for i, path in enumerate(paths):
            a = decode(path, transform)
            if a.shape[1:] != (h, w):
                return (f"image {path} is {a.shape[2]}x{a.shape[1]} after the transform, not {w}x{h} as the first "
                        "image: set data.crop so that every image has one size")
            out[i] = a
    except UserError as err:
        return str(err)
    return out
