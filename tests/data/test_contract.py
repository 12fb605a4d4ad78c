import os

import cv2
import numpy as np
import pandas as pd
import pytest

from src.core.errors import UserError
from src.data.contract import read_train_table, sort_classes
from src.data.images import channel_stats, decode_image, infer_spec, to_array


def read(root):
    return read_train_table(root, "train.csv", "train", "image", "label")


def edit_csv(root, fn):
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    fn(frame)
    frame.to_csv(root / "train.csv", index=False)


def test_reads_ids_without_extension_and_sorts_string_classes(competition):
    table = read(competition)
    assert table.classes == ["cat", "dog", "owl"]
    assert table.paths[0].name == "cat_0.png" and table.labels[0] == 0


def test_integer_class_names_sort_numerically():
    assert sort_classes(["10", "9", "1"]) == ["1", "9", "10"]


def test_imagefolder_layout_becomes_the_same_table(tmp_path, competition):
    root = tmp_path / "folder"
    for row in pd.read_csv(competition / "train.csv").itertuples():
        (root / "train" / row.label).mkdir(parents=True, exist_ok=True)
        os.link(competition / "train" / f"{row.image}.png", root / "train" / row.label / f"{row.image}.png")
    table = read(root)
    assert table.classes == ["cat", "dog", "owl"] and len(table.ids) == 18 and table.ids[0] == "cat/cat_0.png"


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("label"), r"missing column\(s\) \['label'\]"),
    (lambda f: f.loc.__setitem__((3, "label"), ""), r"line 5: empty 'label'"),
    (lambda f: f.loc.__setitem__((3, "label"), "NaN"), r"line 5: empty 'label'"),
    (lambda f: f.loc.__setitem__((2, "label"), "cat "), r"line 4: label 'cat ' has leading/trailing whitespace"),
    (lambda f: f.loc.__setitem__((2, "label"), "Cat"), r"labels 'Cat' and 'cat' differ only in case"),
    (lambda f: f.loc.__setitem__((5, "image"), "cat_0"), r"line 7: duplicate image 'cat_0'"),
    (lambda f: f.loc.__setitem__((1, "image"), "cat_99"), r"line 3: image for id 'cat_99' not found"),
    (lambda f: f.loc.__setitem__((1, "image"), "../../etc/passwd"), r"points outside"),
    (lambda f: f.loc.__setitem__((1, "image"), "/etc/passwd"), r"points outside"),
])
def test_bad_train_csv_gives_one_clear_error(competition, change, message):
    edit_csv(competition, change)
    with pytest.raises(UserError, match=message) as err:
        read(competition)
    assert "\n" not in str(err.value)


def test_empty_and_header_only_csv_are_refused(competition):
    (competition / "train.csv").write_text("")
    with pytest.raises(UserError, match="file is empty"):
        read(competition)
    (competition / "train.csv").write_text("image,label\n")
    with pytest.raises(UserError, match="header but no rows"):
        read(competition)


def test_symlink_out_of_the_image_folder_is_refused(tmp_path, competition):
    outside = tmp_path / "secret.png"
    cv2.imwrite(str(outside), np.zeros((4, 4), np.uint8))
    (competition / "train" / "cat_1.png").unlink()
    (competition / "train" / "cat_1.png").symlink_to(outside)
    with pytest.raises(UserError, match="links outside"):
        read(competition)


def test_corrupt_and_empty_images_are_named(tmp_path):
    empty, corrupt = tmp_path / "empty.png", tmp_path / "bad.png"
    empty.write_bytes(b"")
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png, though it ends like one IEND\xaeB`\x82")
    with pytest.raises(UserError, match="empty.png: empty file"):
        decode_image(empty)
    with pytest.raises(UserError, match="bad.png: cannot decode image"):
        decode_image(corrupt)


def test_sixteen_bit_rgba_and_gray_images_decode_to_uint8(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((5, 6), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "b.png"), np.dstack([np.zeros((5, 6, 3), np.uint8), np.full((5, 6), 9, np.uint8)]))
    a, b = decode_image(tmp_path / "a.png"), decode_image(tmp_path / "b.png")
    assert a.dtype == np.uint8 and a.shape == (5, 6, 1) and a.max() == 255
    assert b.shape == (5, 6, 3)  # alpha dropped


def test_mixed_sizes_and_channels_are_resized_into_one_array():
    gray = np.zeros((10, 10, 1), np.uint8)
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 0] = 255
    spec = infer_spec([gray, colour, gray], image_size_px=0)
    assert (spec.height_px, spec.width_px, spec.in_chans) == (10, 10, 3)
    out = to_array([gray, colour, gray], spec, "area")
    assert out.shape == (3, 10, 10, 3) and out[1, :, :, 0].min() == 255
    assert infer_spec([gray, gray], image_size_px=32).height_px == 32


def test_channel_stats_match_numpy_on_the_whole_array():
    images = np.random.default_rng(0).integers(0, 256, (600, 5, 4, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    pixels = images.reshape(-1, 3) / 255.0
    assert mean == pytest.approx(pixels.mean(0).tolist()) and std == pytest.approx(pixels.std(0).tolist())


def test_hidden_folders_are_not_imagefolder_classes(tmp_path, competition):
    root = tmp_path / "folder"
    for name in ("cat", "dog", ".ipynb_checkpoints", "__MACOSX"):
        (root / "train" / name).mkdir(parents=True)
        os.link(competition / "train" / "cat_0.png", root / "train" / name / "a.png")
    assert read(root).classes == ["cat", "dog"]


def test_truncated_files_and_decompression_bombs_are_refused(tmp_path):
    image = (np.arange(40 * 40) % 251).astype(np.uint8).reshape(40, 40)
    for suffix, message in ((".png", "truncated PNG"), (".jpg", "truncated JPEG")):
        data = cv2.imencode(suffix, image)[1].tobytes()
        (tmp_path / f"cut{suffix}").write_bytes(data[:-20])
        with pytest.raises(UserError, match=message):
            decode_image(tmp_path / f"cut{suffix}")
    cv2.imwrite(str(tmp_path / "bomb.png"), np.zeros((8000, 8000), np.uint8))  # 64 Mpx, a 64 KB file
    with pytest.raises(UserError, match="8000x8000 pixels is over the 50,000,000 limit"):
        decode_image(tmp_path / "bomb.png")


def test_palette_images_decode_to_their_colours(tmp_path):
    from PIL import Image
    palette = Image.new("P", (6, 4))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png")
    decoded = decode_image(tmp_path / "p.png")
    assert decoded.shape == (4, 6, 3) and tuple(decoded[1, 1]) == (255, 0, 0)
