"""The 01-loss papers' other datasets, read from their official distribution formats (local files only).

- STL-10: the binary release (``stl10_binary/{train,test}_{X,y}.bin``: uint8 images stored
  column-major per channel, labels 1..10).
- GTSRB: the official training layout (``GTSRB/Final_Training/Images/<00000..00042>/*.ppm`` with
  ``GT-<class>.csv``) and test images (``GTSRB/Final_Test/Images/*.ppm``) with the separately
  distributed ground truth ``GT-final_test.csv``; signs cropped to their annotated box, resized.
- CelebA: ``img_align_celeba/*.jpg``, ``list_attr_celeba.txt`` and ``list_eval_partition.txt``,
  as a binary task on one attribute (optionally against another, e.g. black vs brown hair).
- Image folder: ImageNet-style ``<root>/<split>/<class>/<image>``; centre square, resized.
- Saturated: any other dataset with saturated pixels (the transferability paper's binarized CIFAR-10).

Decoded images are cached in memory per process (keyed by folder and parameters).
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError

import robench
from robench.errors import DataMissingError, UserInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _nhwc_to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC -> float32 NCHW in [0, 1]; labels -> int64."""
    xt = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
    return xt.contiguous(), torch.from_numpy(np.asarray(y, dtype=np.int64))


def _decode(path: Path, size: int, box: tuple[int, int, int, int] | None = None, square: str = "resize") -> np.ndarray:
    """One image as uint8 (size, size, 3). ``box`` crops first (x1, y1, x2, y2, inclusive as in
    GTSRB's annotations); ``square`` = "resize" stretches the whole image, "center" takes the
    centre square and resizes it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if box is not None:
                x1, y1, x2, y2 = box
                im = im.crop((x1, y1, x2 + 1, y2 + 1))
            if square == "center":  # the centre square (CelebA's usual 178x178 crop), then resize
                w, h = im.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side))
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise UserInputError(f"cannot read image {path}: {exc}") from None


def _decode_all(items: Sequence[tuple[Path, tuple | None]], size: int, square: str = "resize") -> np.ndarray:
    if not items:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([_decode(p, size, box, square) for p, box in items])


def _key(params: robench.Params) -> str:
    return json.dumps(params.model_dump(mode="json"), sort_keys=True)


# -- STL-10 -----------------------------------------------------------------------------------


class Stl10Params(robench.Params):
    size: int = Field(96, ge=8, le=96, description="side of the (square) images; 96 = native, smaller = area-resampled")


class Stl10(robench.Dataset):
    """STL-10 (10 classes, 96x96 RGB; 5000 train, 8000 test) from the official binary release."""

    Params = Stl10Params
    FOLDER = "stl10_binary"
    DEFAULT_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

    def info(self) -> robench.DatasetInfo:
        return robench.DatasetInfo("stl10", (3, self.params.size, self.params.size), self.DEFAULT_CLASSES)

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in ("train", "test"):
            raise UserInputError(f"dataset 'stl10' has splits 'train' and 'test', not {split!r}")
        folder = Path(data_dir) / self.FOLDER
        xs, ys = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
        for f in (xs, ys):
            if not f.is_file():
                raise DataMissingError(
                    f"dataset 'stl10': {f} not found; extract the official stl10_binary.tar.gz into {Path(data_dir)}"
                    f" (it creates {self.FOLDER}/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin)"
                )
        x, y = _read_stl(str(xs), str(ys))
        xt, yt = _nhwc_to_tensors(x, y)
        if self.params.size != 96:
            xt = F.interpolate(xt, size=(self.params.size,) * 2, mode="area")
        return xt, yt


@functools.lru_cache(maxsize=2)
def _read_stl(x_path: str, y_path: str) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(x_path, dtype=np.uint8)
    labels = np.fromfile(y_path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96) or raw.size // (3 * 96 * 96) != labels.size:
        raise UserInputError(
            f"{x_path}: {raw.size} bytes is not {labels.size} images of 3x96x96 (the count in {y_path})"
        )
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise UserInputError(f"{y_path}: labels must be 1..10, found {labels.min()}..{labels.max()}")
    # Each image is stored channel by channel in column-major order: (C, W, H) when read row-major.
    x = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)  # -> N, H, W, C
    return x, labels.astype(np.int64) - 1


# -- GTSRB ------------------------------------------------------------------------------------

GTSRB_CLASSES = (
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70",
    "speed limit 80", "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing",
    "no passing for trucks", "right of way at next intersection", "priority road", "yield", "stop",
    "no vehicles", "trucks prohibited", "no entry", "general caution", "dangerous curve left",
    "dangerous curve right", "double curve", "bumpy road", "slippery road", "road narrows on the right",
    "road work", "traffic signals", "pedestrians", "children crossing", "bicycles crossing",
    "beware of ice/snow", "wild animals crossing", "end of all restrictions", "turn right ahead",
    "turn left ahead", "ahead only", "go straight or right", "go straight or left", "keep right",
    "keep left", "roundabout mandatory", "end of no passing", "end of no passing for trucks",
)  # fmt: skip


class GtsrbParams(robench.Params):
    size: int = Field(48, ge=8, le=1024, description="side of the square images after resizing (the 01-loss papers use 48)")
    crop_roi: bool = Field(True, description="crop each sign to its annotated bounding box before resizing")
    class_ids: list[int] | None = Field(
        None, description="read only these GTSRB class ids, relabelled 0..k-1 in this order (e.g. [3, 8]: 60 vs 120 km/h); faster than the suite's classes: on all 43"
    )


class Gtsrb(robench.Dataset):
    """German Traffic Sign Recognition Benchmark (43 classes) from the official image folders."""

    Params = GtsrbParams

    def _ids(self) -> list[int]:
        ids = self.params.class_ids if self.params.class_ids is not None else list(range(43))
        bad = [i for i in ids if not 0 <= i < 43]
        if bad or len(set(ids)) != len(ids) or len(ids) < 2:
            raise UserInputError(f"gtsrb: class_ids must be >= 2 distinct ids in 0..42, got {ids}")
        return ids

    def info(self) -> robench.DatasetInfo:
        names = tuple(GTSRB_CLASSES[i] for i in self._ids())
        return robench.DatasetInfo("gtsrb", (3, self.params.size, self.params.size), names)

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in ("train", "test"):
            raise UserInputError(f"dataset 'gtsrb' has splits 'train' and 'test', not {split!r}")
        x, y = _read_gtsrb(str(Path(data_dir)), split, _key(self.params), tuple(self._ids()))
        return _nhwc_to_tensors(x, y)


def _gtsrb_rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    need = {"Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"}
    if rows and not need <= set(rows[0]):
        raise UserInputError(f"{csv_path}: expected the columns {sorted(need)}, found {sorted(rows[0])}")
    return rows


@functools.lru_cache(maxsize=4)
def _read_gtsrb(data_dir: str, split: str, params_key: str, ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    p = GtsrbParams(**json.loads(params_key))
    root = Path(data_dir) / "GTSRB"
    relabel = {cid: k for k, cid in enumerate(ids)}
    items: list[tuple[Path, tuple | None]] = []
    labels: list[int] = []

    def take(folder: Path, row: dict[str, str]) -> None:
        cid = int(row["ClassId"])
        if cid in relabel:
            box = tuple(int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")) if p.crop_roi else None
            items.append((folder / row["Filename"], box))
            labels.append(relabel[cid])

    if split == "train":
        base = root / "Final_Training" / "Images"
        if not base.is_dir():
            raise DataMissingError(
                f"dataset 'gtsrb': {base} not found; extract the official GTSRB_Final_Training_Images.zip into {data_dir}"
            )
        for cid in ids:
            folder = base / f"{cid:05d}"
            csv_path = folder / f"GT-{cid:05d}.csv"
            if not csv_path.is_file():
                raise DataMissingError(f"dataset 'gtsrb': {csv_path} not found (class {cid} of the official training set)")
            for row in _gtsrb_rows(csv_path):
                take(folder, row)
    else:
        images = root / "Final_Test" / "Images"
        candidates = [images / "GT-final_test.csv", root / "GT-final_test.csv", Path(data_dir) / "GT-final_test.csv"]
        csv_path = next((c for c in candidates if c.is_file()), None)
        if not images.is_dir() or csv_path is None:
            raise DataMissingError(
                f"dataset 'gtsrb' test split: needs the images in {images} (GTSRB_Final_Test_Images.zip) and the "
                f"ground truth GT-final_test.csv (GTSRB_Final_Test_GT.zip) in one of: " + ", ".join(map(str, candidates))
            )
        for row in _gtsrb_rows(csv_path):
            take(images, row)
    return _decode_all(items, p.size), np.asarray(labels, dtype=np.int64)


# -- CelebA -----------------------------------------------------------------------------------


class CelebaParams(robench.Params):
    attribute: str = Field("Black_Hair", description="CelebA attribute of class 1 (a column of list_attr_celeba.txt)")
    versus: str | None = Field(
        "Brown_Hair", description="class 0 = images with this attribute and not the first (the papers' black vs brown hair); None: all images without the attribute"
    )
    size: int = Field(96, ge=8, le=1024, description="side of the square images: the aligned 178x218 faces are centre-cropped to a square and resized")
    max_per_class: int | None = Field(
        None, ge=1, description="keep at most this many images per class and split (in file order): decoding all 200k faces is slow"
    )


class Celeba(robench.Dataset):
    """CelebA aligned faces as a binary attribute task, from the official annotation files."""

    Params = CelebaParams
    splits = ("train", "valid", "test")
    PARTITION = {"train": 0, "valid": 1, "test": 2}

    def info(self) -> robench.DatasetInfo:
        p = self.params
        negative = p.versus if p.versus else f"not {p.attribute}"
        return robench.DatasetInfo("celeba", (3, p.size, p.size), (negative, p.attribute))

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self.PARTITION:
            raise UserInputError(f"dataset 'celeba' has splits {list(self.PARTITION)}, not {split!r}")
        p = self.params
        if p.versus == p.attribute:
            raise UserInputError(f"celeba: attribute and versus are both {p.attribute!r}")
        root = _celeba_root(Path(data_dir))
        x, y = _read_celeba(str(root), split, _key(p))
        return _nhwc_to_tensors(x, y)


_CELEBA_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba")


def _celeba_root(data_dir: Path) -> Path:
    for root in (data_dir / "celeba", data_dir):
        if all((root / f).exists() for f in _CELEBA_FILES):
            return root
    raise DataMissingError(
        f"dataset 'celeba': expected {', '.join(_CELEBA_FILES)} in {data_dir / 'celeba'} (or {data_dir}); "
        "they are the official list_attr_celeba.txt, list_eval_partition.txt and the extracted img_align_celeba.zip"
    )


@functools.lru_cache(maxsize=4)
def _read_celeba(root: str, split: str, params_key: str) -> tuple[np.ndarray, np.ndarray]:
    p = CelebaParams(**json.loads(params_key))
    base = Path(root)
    attr_path = base / "list_attr_celeba.txt"
    with open(attr_path) as f:
        lines = f.read().splitlines()
    # line 1: image count; line 2: the attribute names; then "<file> <+1/-1 per attribute>"
    names = lines[1].split()
    for a in (p.attribute, p.versus):
        if a is not None and a not in names:
            raise UserInputError(f"celeba: no attribute {a!r} in {attr_path}; available: {', '.join(names)}")
    col = names.index(p.attribute)
    vcol = names.index(p.versus) if p.versus else None
    partition = {}
    with open(base / "list_eval_partition.txt") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                partition[parts[0]] = int(parts[1])
    want = Celeba.PARTITION[split]
    items: list[tuple[Path, None]] = []
    labels: list[int] = []
    counts = [0, 0]
    for line in lines[2:]:
        parts = line.split()
        if not parts or partition.get(parts[0]) != want:
            continue
        values = parts[1:]
        if len(values) != len(names):
            raise UserInputError(f"{attr_path}: line for {parts[0]} has {len(values)} values, expected {len(names)}")
        positive = values[col] == "1"
        if positive:
            label = 1
        elif vcol is None or values[vcol] == "1":
            label = 0
        else:
            continue  # neither class of a "versus" task
        if p.max_per_class is not None and counts[label] >= p.max_per_class:
            continue
        counts[label] += 1
        items.append((base / "img_align_celeba" / parts[0], None))
        labels.append(label)
    return _decode_all(items, p.size, square="center"), np.asarray(labels, dtype=np.int64)


# -- generic image folder ---------------------------------------------------------------------


class ImageFolderParams(robench.Params):
    root: str = Field(
        description="folder holding <split>/<class>/<images>; a relative path is taken from the data dir "
        "($ROBENCH_DATA or the default; with --data-dir elsewhere give an absolute path or class_folders)"
    )
    size: int = Field(64, ge=8, le=1024, description="side of the square images: the centre square of each image, resized")
    class_folders: list[str] | None = Field(
        None, description="use only these class folders, labelled 0..k-1 in this order (default: every folder of the train split, sorted)"
    )
    max_per_class: int | None = Field(None, ge=1, description="keep at most this many images per class and split (sorted by file name)")


class ImageFolder(robench.Dataset):
    """Any ImageNet-style tree ``<root>/{train,val|test}/<class>/<image>`` of RGB images."""

    Params = ImageFolderParams
    splits = ("train", "test", "val")

    def _root(self, data_dir: Path | None) -> Path:
        root = Path(self.params.root).expanduser()
        if not root.is_absolute():
            if data_dir is None:
                raise UserInputError(f"imagefolder: root {self.params.root!r} is relative, but no data dir is set")
            root = Path(data_dir) / root
        return root

    def _classes(self, root: Path) -> list[str]:
        if self.params.class_folders is not None:
            if len(self.params.class_folders) < 2:
                raise UserInputError("imagefolder: class_folders needs at least two folders")
            return list(self.params.class_folders)
        train = root / "train"
        if not train.is_dir():
            raise DataMissingError(f"dataset 'imagefolder': {train} not found (expected {root}/train/<class>/<images>)")
        return sorted(d.name for d in train.iterdir() if d.is_dir())

    def info(self) -> robench.DatasetInfo:
        # Class names come from the folders; without a data dir here, use the root as given.
        root = Path(self.params.root).expanduser()
        if not root.is_absolute():
            root = robench.resolve_data_dir() / root
        return robench.DatasetInfo("imagefolder", (3, self.params.size, self.params.size), tuple(self._classes(root)))

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self.splits:
            raise UserInputError(f"dataset 'imagefolder' has splits {list(self.splits)}, not {split!r}")
        root = self._root(data_dir)
        folder = root / split
        if split == "test" and not folder.is_dir():
            folder = root / "val"  # ImageNet ships its held-out images as "val"
        if not folder.is_dir():
            raise DataMissingError(f"dataset 'imagefolder': split folder {folder} not found")
        classes = self._classes(root)
        named = list(self.info().class_names)
        if classes != named:
            raise UserInputError(
                f"imagefolder: the class folders under {root} ({len(classes)}) differ from those found when the "
                f"dataset was described ({len(named)}); give an absolute root or list class_folders"
            )
        x, y = _read_folder(str(folder), tuple(classes), self.params.size, self.params.max_per_class)
        return _nhwc_to_tensors(x, y)


@functools.lru_cache(maxsize=4)
def _read_folder(folder: str, classes: tuple[str, ...], size: int, max_per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    items: list[tuple[Path, None]] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        d = Path(folder) / name
        if not d.is_dir():
            raise DataMissingError(f"dataset 'imagefolder': class folder {d} not found")
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_class is not None:
            files = files[:max_per_class]
        items += [(f, None) for f in files]
        labels += [k] * len(files)
    return _decode_all(items, size, square="center"), np.asarray(labels, dtype=np.int64)


# -- saturated inputs -------------------------------------------------------------------------


class SaturatedParams(robench.Params):
    base: str = Field(description="the dataset plugin whose images are saturated (e.g. cifar10)")
    base_params: dict[str, Any] = Field(default_factory=dict, description="that plugin's parameters")
    p: float = Field(
        float("inf"), ge=2, json_schema_extra={"allow_inf": True},
        description="saturation exponent: 2 leaves images unchanged, larger pushes pixels towards 0 and 1, .inf binarizes",
    )


class Saturated(robench.Dataset):
    """Another dataset with every pixel saturated, ``x_p = 1/2 + sign(2x - 1) |2x - 1|^(2/p) / 2``
    (Ding et al. 2019, used by the transferability paper's "fully binarized" CIFAR-10 with p = inf).
    Training and evaluation images alike are transformed; attacks then work in the saturated space."""

    Params = SaturatedParams

    def __init__(self, params: SaturatedParams, ctx: robench.Context | None = None):
        super().__init__(params)
        # The base dataset is built through the run's Context (it may come from a --plugin module);
        # constructed without one, from the installed plugins.
        self._ctx = ctx if ctx is not None else robench.Context()

    def _base(self) -> robench.Dataset:
        if self.params.base == "saturated":
            raise UserInputError("saturated: base cannot itself be 'saturated'")
        try:
            return self._ctx.dataset(self.params.base, self.params.base_params)
        except ValidationError as exc:
            problems = "; ".join(f"base_params.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise UserInputError(f"saturated: invalid parameters for {self.params.base!r}: {problems}") from None

    @property
    def splits(self):  # the base dataset's splits
        return self._base().splits

    def info(self) -> robench.DatasetInfo:
        base = self._base().info()
        return robench.DatasetInfo(f"{base.name}-saturated", base.input_shape, base.class_names)

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._base().load(split, data_dir)
        return saturate(x, self.params.p), y


def saturate(x: torch.Tensor, p: float) -> torch.Tensor:
    """``1/2 + sign(2x - 1) |2x - 1|^(2/p) / 2``; p = inf maps to {0, 1/2, 1} (1/2 only for x = 1/2)."""
    centred = 2 * x - 1
    return (0.5 + centred.sign() * centred.abs().pow(2.0 / p) / 2).clamp_(0, 1)
