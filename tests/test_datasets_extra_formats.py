"""STL-10, GTSRB, CelebA and image-folder datasets, read from small files written in the official layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from robench.errors import DataMissingError, UserInputError
from robench.plugins import get_registry
from robench_plugins.datasets.extra import Celeba, Gtsrb, ImageFolder, Stl10


def test_registered():
    names = get_registry().specs["dataset"]
    for name, cls in [("stl10", Stl10), ("gtsrb", Gtsrb), ("celeba", Celeba), ("imagefolder", ImageFolder)]:
        assert names[name].factory is cls


# -- STL-10 -----------------------------------------------------------------------------------


def write_stl(folder, split, images_nhwc, labels_1based):
    folder.mkdir(parents=True, exist_ok=True)
    # official layout: per image, channel by channel, column-major (i.e. (C, W, H) row-major)
    images_nhwc.transpose(0, 3, 2, 1).astype(np.uint8).tofile(folder / f"{split}_X.bin")
    np.asarray(labels_1based, dtype=np.uint8).tofile(folder / f"{split}_y.bin")


def test_stl10_binary_layout(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    imgs[1, 10, 70, 2] = 255  # a marker at row 10, column 70, blue channel
    imgs[1, 70, 10, 2] = 0
    write_stl(tmp_path / "stl10_binary", "test", imgs, [1, 10, 4])
    x, y = Stl10(Stl10.Params()).load("test", tmp_path)
    assert x.shape == (3, 3, 96, 96) and x.dtype == torch.float32
    assert y.tolist() == [0, 9, 3]
    assert torch.equal(x, torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)
    assert x[1, 2, 10, 70] == 1.0 and x[1, 2, 70, 10] == 0.0  # rows and columns not swapped
    small, _ = Stl10(Stl10.Params(size=32)).load("test", tmp_path)
    assert small.shape == (3, 3, 32, 32)
    assert torch.allclose(small[0, :, 0, 0], x[0, :, :3, :3].mean((1, 2)))  # area resampling


def test_stl10_errors(tmp_path):
    with pytest.raises(DataMissingError, match="stl10_binary/test_X.bin"):
        Stl10(Stl10.Params()).load("test", tmp_path)
    write_stl(tmp_path / "stl10_binary", "train", np.zeros((2, 96, 96, 3), np.uint8), [1, 2, 3])
    with pytest.raises(UserInputError, match="is not 3 images"):
        Stl10(Stl10.Params()).load("train", tmp_path)


# -- GTSRB ------------------------------------------------------------------------------------


def sign_image(path, size, roi, inside, outside):
    """A (size x size) image: ``inside`` colour in the ROI box (inclusive corners), ``outside`` elsewhere."""
    a = np.zeros((size[1], size[0], 3), np.uint8) + np.array(outside, np.uint8)
    x1, y1, x2, y2 = roi
    a[y1 : y2 + 1, x1 : x2 + 1] = inside
    Image.fromarray(a).save(path)


def write_gtsrb(root):
    colours = {3: (200, 0, 0), 8: (0, 0, 200), 14: (0, 200, 0)}
    for cid, colour in colours.items():
        folder = root / "GTSRB" / "Final_Training" / "Images" / f"{cid:05d}"
        folder.mkdir(parents=True)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for k in range(2):
            name = f"{k:05d}_00000.ppm"
            sign_image(folder / name, (30, 34), (5, 6, 24, 27), colour, (255, 255, 255))
            rows.append(f"{name};30;34;5;6;24;27;{cid}")
        (folder / f"GT-{cid:05d}.csv").write_text("\n".join(rows) + "\n")
    test = root / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for k, cid in enumerate([8, 14, 3, 8]):
        sign_image(test / f"{k:05d}.ppm", (40, 40), (8, 8, 31, 31), colours[cid], (255, 255, 255))
        rows.append(f"{k:05d}.ppm;40;40;8;8;31;31;{cid}")
    (test / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return colours


def test_gtsrb_official_layout_roi_and_class_subset(tmp_path):
    colours = write_gtsrb(tmp_path)
    ds = Gtsrb(Gtsrb.Params(size=16, class_ids=[8, 3]))
    assert ds.info().class_names == ("speed limit 120", "speed limit 60")
    assert ds.info().input_shape == (3, 16, 16)
    x, y = ds.load("train", tmp_path)
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]  # class 8 first, as listed
    # cropped to the box: every pixel is the sign colour, none of the white border
    assert torch.allclose(x[0], torch.tensor(colours[8]).float().div(255)[:, None, None].expand(3, 16, 16))
    xt, yt = ds.load("test", tmp_path)
    assert yt.tolist() == [0, 1, 0]  # test images of classes 8, 3, 8 in file order; class 14 left out
    full = Gtsrb(Gtsrb.Params(size=40, crop_roi=False, class_ids=[8, 3])).load("test", tmp_path)[0]
    assert torch.allclose(full[0, :, 0, 0], torch.ones(3))  # uncropped: the white border is kept


def test_gtsrb_missing_files(tmp_path):
    with pytest.raises(DataMissingError, match="Final_Training/Images"):
        Gtsrb(Gtsrb.Params()).load("train", tmp_path)
    write_gtsrb(tmp_path)
    (tmp_path / "GTSRB" / "Final_Test" / "Images" / "GT-final_test.csv").unlink()
    with pytest.raises(DataMissingError, match="GT-final_test.csv"):
        Gtsrb(Gtsrb.Params(class_ids=[3, 8])).load("test", tmp_path)
    with pytest.raises(UserInputError, match="class_ids"):
        Gtsrb(Gtsrb.Params(class_ids=[3, 43])).info()


# -- CelebA -----------------------------------------------------------------------------------

ATTRS = ["5_o_Clock_Shadow", "Black_Hair", "Brown_Hair", "Smiling"]
# file, black, brown, smiling, partition
FACES = [
    ("000001.jpg", 1, -1, 1, 0),
    ("000002.jpg", -1, 1, -1, 0),
    ("000003.jpg", -1, -1, 1, 0),  # neither black nor brown: out of the versus task
    ("000004.jpg", 1, -1, -1, 2),
    ("000005.jpg", -1, 1, 1, 2),
    ("000006.jpg", -1, 1, -1, 2),
    ("000007.jpg", 1, -1, 1, 1),
]


def write_celeba(root):
    img = root / "celeba" / "img_align_celeba"
    img.mkdir(parents=True)
    lines = [str(len(FACES)), " ".join(ATTRS)]
    for name, black, brown, smiling, _ in FACES:
        a = np.zeros((218, 178, 3), np.uint8)
        a[20:198, :] = (250, 10, 10) if black == 1 else (10, 10, 250)  # centre square coloured by class
        Image.fromarray(a).save(img / name, quality=95)
        lines.append(f"{name} {-1:2d} {black:2d} {brown:2d} {smiling:2d}")
    (root / "celeba" / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "celeba" / "list_eval_partition.txt").write_text("".join(f"{f[0]} {f[4]}\n" for f in FACES))


def test_celeba_black_vs_brown_hair(tmp_path):
    write_celeba(tmp_path)
    ds = Celeba(Celeba.Params(size=24))
    assert ds.info().class_names == ("Brown_Hair", "Black_Hair")
    x, y = ds.load("train", tmp_path)
    assert y.tolist() == [1, 0]  # 000003 has neither attribute
    assert x.shape == (2, 3, 24, 24)
    # the centre crop keeps only the coloured square (JPEG error aside)
    assert (x[0, 0] > 0.85).all() and (x[0, 2] < 0.15).all()
    assert (x[1, 2] > 0.85).all() and (x[1, 0] < 0.15).all()
    _, yt = ds.load("test", tmp_path)
    assert yt.tolist() == [1, 0, 0]
    _, yv = ds.load("valid", tmp_path)
    assert yv.tolist() == [1]


def test_celeba_attribute_against_the_rest_and_caps(tmp_path):
    write_celeba(tmp_path)
    ds = Celeba(Celeba.Params(attribute="Smiling", versus=None, size=16))
    assert ds.info().class_names == ("not Smiling", "Smiling")
    assert ds.load("train", tmp_path)[1].tolist() == [1, 0, 1]
    capped = Celeba(Celeba.Params(attribute="Smiling", versus=None, size=16, max_per_class=1))
    assert capped.load("train", tmp_path)[1].tolist() == [1, 0]
    with pytest.raises(UserInputError, match="no attribute 'Blond'.*Black_Hair"):
        Celeba(Celeba.Params(attribute="Blond", size=16)).load("train", tmp_path)


def test_celeba_missing(tmp_path):
    with pytest.raises(DataMissingError, match="list_attr_celeba.txt"):
        Celeba(Celeba.Params()).load("train", tmp_path)


# -- image folder -----------------------------------------------------------------------------


def write_folder(root):
    for split, n in (("train", 3), ("val", 2)):
        for k, (wnid, colour) in enumerate((("n01", (255, 0, 0)), ("n02", (0, 255, 0)), ("n03", (0, 0, 255)))):
            d = root / "tiny" / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                a = np.zeros((20, 40, 3), np.uint8)  # wide: left/right quarters black, centre coloured
                a[:, 6:34] = colour
                Image.fromarray(a).save(d / f"img{i}.png")
            (d / "notes.txt").write_text("not an image")


def test_image_folder_imagenet_style(tmp_path):
    write_folder(tmp_path)
    ds = ImageFolder(ImageFolder.Params(root=str(tmp_path / "tiny"), size=10))
    assert ds.info().class_names == ("n01", "n02", "n03")
    x, y = ds.load("train", tmp_path)
    assert x.shape == (9, 3, 10, 10) and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # shorter side to 10 (40x20 -> 20x10), centre crop: only the coloured middle remains
    assert torch.equal(x[3], torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 10, 10))
    _, yt = ds.load("test", tmp_path)  # "test" falls back to ImageNet's "val"
    assert yt.tolist() == [0, 0, 1, 1, 2, 2]


def test_image_folder_selection_relative_root_and_errors(tmp_path):
    write_folder(tmp_path)
    ds = ImageFolder(ImageFolder.Params(root="tiny", size=8, class_folders=["n03", "n01"], max_per_class=2))
    x, y = ds.load("train", tmp_path)
    assert y.tolist() == [0, 0, 1, 1] and x[0, 2].min() == 1.0  # n03 (blue) is class 0
    with pytest.raises(DataMissingError, match="n09"):
        ImageFolder(ImageFolder.Params(root=str(tmp_path / "tiny"), class_folders=["n01", "n09"])).load("train", tmp_path)
    with pytest.raises(DataMissingError, match="train"):
        ImageFolder(ImageFolder.Params(root=str(tmp_path / "nowhere"))).info()


# -- saturated --------------------------------------------------------------------------------


def test_saturation_formula():
    from robench_plugins.datasets.extra import saturate

    x = torch.tensor([0.0, 0.2, 0.5, 0.6, 1.0])
    assert torch.allclose(saturate(x, 2.0), x)  # p = 2 is the identity
    assert saturate(x, float("inf")).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    mid = saturate(x, 4.0)  # |2x-1|^(1/2): pushed towards the ends, order kept
    assert mid[1] < x[1] and mid[3] > x[3] and torch.all(mid.diff() > 0)


def test_saturated_wraps_another_dataset(tmp_path):
    from robench_plugins.datasets.extra import Saturated

    imgs = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    write_stl(tmp_path / "stl10_binary", "train", imgs, [1, 2, 3, 4])
    ds = Saturated(Saturated.Params(base="stl10", base_params={"size": 32}))
    assert ds.info().name == "stl10-saturated" and ds.info().input_shape == (3, 32, 32)
    assert "train" in ds.splits
    x, y = ds.load("train", tmp_path)
    base_x, base_y = Stl10(Stl10.Params(size=32)).load("train", tmp_path)
    assert torch.equal(y, base_y)
    assert torch.equal(x, (base_x > 0.5).float() + 0.5 * (base_x == 0.5).float())
    with pytest.raises(UserInputError, match="base_params.size"):
        Saturated(Saturated.Params(base="stl10", base_params={"size": "big"})).info()
