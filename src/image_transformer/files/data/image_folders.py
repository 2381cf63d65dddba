"""Folders and archives of image files (flat or one subfolder per class), and aligned CelebA faces."""

from __future__ import annotations

import os
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
from tqdm import tqdm

from ..image_files import FOLDER_EXTENSIONS, normalise_mode, open_image
from ._common import BOX, PROGRESS_THRESHOLD, DataError, ImageData, check_split, require_exists, size_or_none


@dataclass
class _Entry:
    parts: tuple[str, ...]  # path relative to the data root, split into components
    ref: Any  # a filesystem Path, or a TarInfo of an open archive
    order: int = 0  # position in the archive (tar) for sequential reading


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _wanted(parts: Sequence[str]) -> bool:
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False  # hidden files and macOS resource forks ("._x.jpg" is not an image)
    return parts[-1].lower().endswith(FOLDER_EXTENSIONS)


class _Source:
    """The image files of a folder or tar archive, with a uniform way to read them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tar: tarfile.TarFile | None = None
        entries: list[_Entry] = []
        if _is_archive(root):
            try:
                self.tar = tarfile.open(root, "r:*")
                members = self.tar.getmembers()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                self.close()
                raise DataError(f"{root}: cannot read tar archive ({type(exc).__name__}: {exc})") from exc
            for i, m in enumerate(members):
                parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
                if m.isfile() and parts and _wanted(parts):
                    entries.append(_Entry(parts, m, i))
            tops = {e.parts[0] for e in entries if len(e.parts) > 1}
            if len(tops) == 1 and all(len(e.parts) > 1 for e in entries):  # strip the archive's top folder
                entries = [_Entry(e.parts[1:], e.ref, e.order) for e in entries]
                self.description = f"{root}:{tops.pop()}/"
            else:
                self.description = str(root)
        elif root.is_dir():
            seen: set[str] = set()
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in seen:  # a symlink loop
                    dirnames[:] = []
                    continue
                seen.add(real)
                dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
                rel = Path(dirpath).relative_to(root).parts
                for name in filenames:
                    parts = (*rel, name)
                    if _wanted(parts):
                        entries.append(_Entry(parts, Path(dirpath) / name))
            self.description = str(root)
        else:
            raise DataError(f"{root}: not a folder or a .tar/.tar.gz/.tgz archive of images")
        entries.sort(key=lambda e: e.parts)
        for i, e in enumerate(entries):
            if not self.tar:
                e.order = i
        self.entries = entries

    def name(self, entry: _Entry) -> str:
        return f"{self.root}:{entry.ref.name}" if self.tar else str(entry.ref)

    def read(self, entry: _Entry) -> bytes:
        try:
            if self.tar:
                f = self.tar.extractfile(entry.ref)
                if f is None:
                    raise OSError("not a regular file")
                return f.read()
            return Path(entry.ref).read_bytes()
        except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
            raise DataError(f"{self.name(entry)}: cannot read file ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        if self.tar:
            self.tar.close()


_SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val", "valid"), "val": ("val", "valid", "test")}


def _select_split(entries: list[_Entry], split: str | None, where: str) -> tuple[list[_Entry], str]:
    """Restrict to the ``split`` subfolder if the data has train/ and test/ (or val/) subfolders."""
    tops = {e.parts[0] for e in entries if len(e.parts) > 1}
    if "train" not in tops or not tops & {"test", "val", "valid"}:
        note = "" if split is None else f"; no train/test subfolders, so all images are used for the {split} split"
        return entries, note
    if split is None:
        raise DataError(f"{where}: has {'/'.join(sorted(tops & {'train', 'test', 'val', 'valid'}))} "
                        f"subfolders; pass split='train' or 'test'")
    for folder in _SPLIT_ALIASES.get(split, (split,)):
        if folder in tops:
            chosen = [_Entry(e.parts[1:], e.ref, e.order) for e in entries if e.parts[0] == folder and len(e.parts) > 1]
            return chosen, f"; {folder}/ subfolder"
    raise DataError(f"{where}: no {split}/ subfolder (found {', '.join(sorted(tops))})")


def _common_channels(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack decoded images (H, W) / (H, W, 2 | 3 | 4) with one channel layout for all, (N, H, W, C).

    Colour if any image has colour (grey is repeated into R, G and B, as PIL's L -> RGB does); an alpha channel
    if any image has one that is not fully opaque (images without one get 255), so that opaque RGBA files stay
    RGB, as before 2- and 4-channel images were supported.
    """
    shaped = [a[..., None] if a.ndim == 2 else a for a in arrays]
    colour = any(a.shape[-1] >= 3 for a in shaped)
    alpha = any(a.shape[-1] in (2, 4) and a[..., -1].min() < 255 for a in shaped)
    out = []
    for a in shaped:
        c = a.shape[-1]
        base = a[..., :3] if c >= 3 else (np.repeat(a[..., :1], 3, axis=-1) if colour else a[..., :1])
        if alpha:
            opacity = a[..., -1:] if c in (2, 4) else np.full(a.shape[:2] + (1,), 255, np.uint8)
            base = np.concatenate([base, opacity], axis=-1)
        out.append(base)
    return np.stack(out)


def _decode(source: _Source, entries: list[_Entry], crop: Any, image_size: tuple[int, int] | None,
            desc: str) -> np.ndarray:
    """Decode ``entries`` (in their list order) to one uint8 (N, H, W, C) array."""
    out: list[np.ndarray | None] = [None] * len(entries)
    first: tuple[str, tuple[int, int]] | None = None
    reading_order = sorted(range(len(entries)), key=lambda i: entries[i].order)  # sequential in archives
    bar = tqdm(total=len(entries), desc=desc, unit="img",
               disable=None if len(entries) > PROGRESS_THRESHOLD else True)
    try:
        for i in reading_order:
            entry = entries[i]
            name = source.name(entry)
            raw = source.read(entry)
            try:
                img = normalise_mode(open_image(raw, name))
            except ValueError as exc:  # over the pixel budget, or not a readable image
                raise DataError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
                raise DataError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
            box = crop(img.width, img.height) if callable(crop) else crop
            if box is not None:
                top, left, height, width = (int(v) for v in box)
                if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > img.height \
                        or left + width > img.width:
                    raise DataError(f"{name}: crop (top={top}, left={left}, height={height}, width={width}) "
                                    f"does not fit in the {img.height}x{img.width} image")
                img = img.crop((left, top, left + width, top + height))
            if image_size is not None:
                if (img.height, img.width) != tuple(image_size):
                    img = img.resize((image_size[1], image_size[0]), BOX)
            else:
                size = (img.height, img.width)
                if first is None:
                    first = (name, size)
                elif size != first[1]:
                    raise DataError(
                        f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]} but {name} is "
                        f"{size[0]}x{size[1]} (HxW{', after cropping' if box is not None else ''}); "
                        f"pass image_size=(H, W) (--image-size HxW) to resize them all")
            array = np.asarray(img, dtype=np.uint8)
            out[i] = array
            bar.update(1)
    finally:
        bar.close()
    if not out:
        raise DataError(f"{desc}: no images")
    return _common_channels(out)  # type: ignore[arg-type]


def load_image_folder(root: str | os.PathLike, split: str | None = None,
                      image_size: tuple[int, int] | None = None,
                      crop: tuple[int, int, int, int] | None = None,
                      leave_out: Collection[str] | None = None) -> ImageData:
    """Images (png/jpg/jpeg/bmp/webp) from a folder or a .tar/.tar.gz/.tgz archive (read in place).

    If the folder (or the archive's single top folder) has ``train/`` and ``test/`` (or ``val/``) subfolders,
    the one named by ``split`` is used; otherwise all images are used whatever ``split`` is.
    One subfolder per class gives labels (classes = sorted subfolder names); a flat folder gives no labels.
    Images become RGB, or stay grayscale (C=1) if every image is grayscale; with an alpha channel (grey + alpha,
    C=2, or RGBA, C=4) where any image has one that is not fully opaque. ``crop`` = (top, left, height,
    width) is applied first, then an area-averaging (PIL BOX) resize to ``image_size`` = (H, W). Without
    ``image_size`` all images must have the same size.

    ``leave_out``: files to drop, named relative to the split's folder, with or without their extension
    (``airplane/0001``); every name must be there, so that a list made for other data is refused rather than
    leaving nothing out. The class names stay those of the whole folder.
    """
    root = Path(root)
    require_exists(root)
    image_size = size_or_none(image_size)
    source = _Source(root)
    try:
        entries, note = _select_split(source.entries, split, source.description)
        if not entries:
            raise DataError(f"{source.description}: no image files ({', '.join(FOLDER_EXTENSIONS)}) found"
                            + (f" for the {split} split" if split else ""))
        loose = [e for e in entries if len(e.parts) == 1]
        if loose and len(loose) != len(entries):
            nested = next(e for e in entries if len(e.parts) > 1)
            raise DataError(f"{source.description}: mixes loose images ({'/'.join(loose[0].parts)}) with images "
                            f"in class subfolders ({'/'.join(nested.parts)}); use one layout")
        class_names = None if loose else sorted({e.parts[0] for e in entries})
        if leave_out is not None:
            entries = _leave_out(entries, leave_out, f"{source.description}{note}")
            note += f"; {len(leave_out)} files left out"
        if class_names is None:
            labels = None
        else:
            index = {name: i for i, name in enumerate(class_names)}
            entries.sort(key=lambda e: (e.parts[0], e.parts[1:]))
            labels = np.array([index[e.parts[0]] for e in entries], dtype=np.int64)
        images = _decode(source, entries, crop, image_size, source.description)
    finally:
        source.close()
    layout = "flat" if class_names is None else f"{len(class_names)} classes"
    return ImageData(images=images, labels=labels, num_classes=None if class_names is None else len(class_names),
                     class_names=class_names, source=f"image folder {source.description} ({layout}{note})",
                     names=["/".join(e.parts) for e in entries])


def _stem(name: str) -> str:
    """A file's name without its image extension: "airplane/0001.jpg" -> "airplane/0001"."""
    lower = name.lower()
    for ext in FOLDER_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def _leave_out(entries: list[_Entry], names: Collection[str], where: str) -> list[_Entry]:
    """``entries`` without the files ``names`` lists; a DataError naming those that are not there."""
    wanted = {_stem(n.strip().strip("/")) for n in names}
    kept = [e for e in entries if _stem("/".join(e.parts)) not in wanted]
    found = {_stem("/".join(e.parts)) for e in entries} & wanted
    if len(found) != len(wanted):
        missing = sorted(wanted - found)
        raise DataError(f"{where}: {len(missing)} of the {len(wanted)} files to leave out are not in it "
                        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): the list was made for "
                        f"other data")
    if not kept:
        raise DataError(f"{where}: the leave-out list names every image")
    return kept


def read_name_list(path: str | os.PathLike) -> list[str]:
    """File names, one per line (blank lines and ``#`` comments skipped), as a leave-out list is written."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the list of files ({type(exc).__name__}: {exc})") from None
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataError(f"{path}: the list of files is empty")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataError(f"{path}: {repeated[0]} is listed more than once")
    return names


# CelebA aligned faces: the paper's square crop, given for the half-resolution 89x109 (WxH) images.
_CELEBA_REF = (89, 109)  # width, height
_CELEBA_CROP = (20, 10, 69)  # top, left, side


def _celeba_crop(width: int, height: int) -> tuple[int, int, int, int]:
    sx, sy = width / _CELEBA_REF[0], height / _CELEBA_REF[1]
    top, left, side = _CELEBA_CROP
    side_px = int(round(side * min(sx, sy)))
    return (int(round(top * sy)), int(round(left * sx)), side_px, side_px)


def load_celeba(root: str | os.PathLike, split: str, image_size: int | tuple[int, int] = 32,
                num_test: int = 1000) -> ImageData:
    """Aligned CelebA faces from a flat folder or archive, sorted by file name, centre-cropped and area-resized.

    The crop is 69x69 at row 20, column 10 for the 89x109 half-resolution images, scaled proportionally for
    other sizes (138x138 at row 40, column 20 for the full 178x218). "train" is all but the last ``num_test``
    images, "test" the last ``num_test``. No labels.
    """
    root = Path(root)
    require_exists(root)
    check_split(split, root)
    size = size_or_none(image_size)
    source = _Source(root)
    try:
        entries = sorted(source.entries, key=lambda e: (e.parts[-1], e.parts))
        if not entries:
            raise DataError(f"{source.description}: no image files ({', '.join(FOLDER_EXTENSIONS)}) found")
        if num_test < 0 or len(entries) <= num_test:
            raise DataError(f"{source.description}: {len(entries)} images, not enough for a test split of "
                            f"{num_test} plus training images")
        cut = len(entries) - num_test
        entries = entries[:cut] if split == "train" else entries[cut:]
        images = _decode(source, entries, _celeba_crop, size, source.description)
    finally:
        source.close()
    images = images[..., :3] if images.shape[-1] == 4 else images[..., :1] if images.shape[-1] == 2 else images
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return ImageData(images=images, labels=None, num_classes=None, class_names=None,
                     source=f"CelebA faces in {source.description} ({split} split: {len(images)} images, "
                            f"centre crop, {size[0]}x{size[1]})")  # type: ignore[index]
