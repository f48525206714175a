"""Image decoding: every pixel mode -> RGB uint8, EXIF orientation, bombs, broken files."""
from __future__ import annotations

import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from tfzoo.data import images, validate


def _png(width, height, bit_depth, color_type, raw_rows):
    """A PNG file's bytes from raw filtered-less rows (filter byte 0 is prepended)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = b"".join(b"\x00" + row for row in raw_rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def test_rgb_jpeg_decodes_to_uint8_hw3(make_image, tmp_path):
    path = make_image(tmp_path / "a.jpg", (40, 56))
    array = images.decode_image(path)
    assert array.dtype == np.uint8 and array.shape == (40, 56, 3)
    assert images.image_size(path) == (40, 56)


@pytest.mark.parametrize("orientation, swapped", [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation_applied_and_size_from_header_is_oriented(make_image, tmp_path, orientation, swapped):
    path = make_image(tmp_path / "a.jpg", (32, 48), orientation=orientation)
    expected_size = (48, 32) if swapped else (32, 48)
    assert images.image_size(path) == expected_size
    array = images.decode_image(path)
    assert array.shape[:2] == expected_size
    raw = np.asarray(Image.open(path).convert("RGB"))
    rotated = {1: raw, 3: np.rot90(raw, 2), 6: np.rot90(raw, -1), 8: np.rot90(raw, 1)}[orientation]
    np.testing.assert_array_equal(array, rotated)


def test_png_alpha_dropped_keeping_rgb_values(tmp_path):
    rgba = np.zeros([8, 10, 4], np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 0  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(images.decode_image(tmp_path / "a.png"), rgba[..., :3])


def test_palette_gray_and_gray_alpha_become_rgb(tmp_path):
    palette = Image.new("P", (6, 4))
    palette.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "p.png")
    out = images.decode_image(tmp_path / "p.png")
    assert out.shape == (4, 6, 3)
    assert tuple(out[0, 0]) == (200, 150, 100) and tuple(out[1, 1]) == (10, 20, 30)

    gray = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(images.decode_image(tmp_path / "l.png"), np.repeat(gray[..., None], 3, 2))
    Image.fromarray(gray, "L").convert("LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(images.decode_image(tmp_path / "la.png"), np.repeat(gray[..., None], 3, 2))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # red in CMYK
    out = images.decode_image(tmp_path / "c.jpg")
    assert out.shape == (6, 8, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_16bit_gray_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 255, 300, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = images.decode_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 128, 255])  # v >> 8; clipping gives 255 for 300
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_16bit_rgb_png_keeps_high_byte(tmp_path):
    pixels = np.array([[[65535, 32768, 300], [0, 4660, 65280]]], np.uint16)  # 1 x 2 x 3
    (tmp_path / "rgb16.png").write_bytes(_png(2, 1, 16, 2, [pixels[0].astype(">u2").tobytes()]))
    np.testing.assert_array_equal(images.decode_image(tmp_path / "rgb16.png"), pixels >> 8)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", validate.EMPTY_FILE),
        (b"this is not an image at all", validate.NOT_AN_IMAGE),
        (None, validate.MISSING_IMAGE),
    ],
)
def test_unusable_files_raise_image_error_with_reason(tmp_path, content, problem):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    for fn in (images.decode_image, images.image_size):
        with pytest.raises(images.ImageError) as info:
            fn(path)
        assert info.value.problem == problem and str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_fails_at_decode_not_at_header(make_image, tmp_path, suffix):
    path = make_image(tmp_path / f"a{suffix}", (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert images.image_size(path) == (64, 64)  # the header is intact
    with pytest.raises(images.ImageError) as info:
        images.decode_image(path)
    assert info.value.problem == validate.CORRUPT_IMAGE


@pytest.mark.parametrize("side", [10_000, 30_000])  # above PIL's limit, and above twice it
def test_decompression_bomb_refused_from_header_fast(tmp_path, side):
    # A real PNG header claiming side x side pixels; its data would take gigabytes to decode.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(side, side, 8, 0, [b"\x00" * 16])[: 8 + 25 + 40] + b"\x00" * 64)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for fn in (images.image_size, images.decode_image):
            with pytest.raises(images.ImageError) as info:
                fn(path)
            assert info.value.problem == validate.IMAGE_TOO_LARGE
    assert time.perf_counter() - start < 1.0


def test_max_pixels_is_configurable(make_image, tmp_path):
    path = make_image(tmp_path / "a.png", (40, 40))
    with pytest.raises(images.ImageError, match="max_pixels=1000"):
        images.decode_image(path, max_pixels=1000)
    assert images.decode_image(path, max_pixels=1600).shape == (40, 40, 3)


def test_conversion_notes_name_normal_conversions():
    assert images.conversion_notes("RGB") == []
    assert images.conversion_notes("P", 6) == ["applied EXIF orientation", "converted P to RGB"]
    assert images.conversion_notes("I;16") == ["scaled 16-bit to 8-bit"]


def test_read_headers_keeps_order_and_returns_errors(make_image, tmp_path):
    paths = []
    for i in range(70):  # above the thread-pool threshold
        path = tmp_path / f"{i}.png"
        if i % 10 == 3:
            path.write_bytes(b"")
        else:
            make_image(path, (8 + i % 5, 9))
        paths.append(path)
    headers = images.read_headers(paths)
    for i, header in enumerate(headers):
        if i % 10 == 3:
            assert isinstance(header, images.ImageError) and header.problem == validate.EMPTY_FILE
        else:
            assert (header["height"], header["width"]) == (8 + i % 5, 9)


def _record(path, size, image_id):
    return {
        "path": str(path),
        "height": size[0],
        "width": size[1],
        "boxes": np.array([[0.1, 0.2, 0.5, 0.6]], np.float32),
        "classes": np.array([int(image_id)], np.int32),
        "is_crowd": np.array([False]),
        "difficult": np.array([True]),
        "image_id": image_id,
    }


def test_dataset_decodes_in_order_and_drops_images_failing_at_decode(make_image, tmp_path):
    records = []
    for i in range(6):
        path = make_image(tmp_path / f"{i}.jpg", (32 + i, 40))
        if i == 2:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])  # header fine, data truncated
        records.append(_record(path, (32 + i, 40), str(i)))
    records[4]["height"] = 99  # scanned size disagrees with the decoded image
    report = validate.Report()
    examples = list(images.dataset(records, report).as_numpy_iterator())
    assert [e["image_id"].decode() for e in examples] == ["0", "1", "3", "5"]
    for e in examples:
        i = int(e["image_id"])
        assert e["image"].shape == (32 + i, 40, 3) and e["image"].dtype == np.uint8
        np.testing.assert_allclose(e["boxes"], [[0.1, 0.2, 0.5, 0.6]])
        assert e["classes"].tolist() == [i] and e["difficult"].tolist() == [True]
    problems = {(p.file, p.problem) for p in report}
    assert problems == {
        (str(tmp_path / "2.jpg"), validate.CORRUPT_IMAGE),
        (str(tmp_path / "4.jpg"), validate.SIZE_MISMATCH),
    }


def test_dataset_with_strict_report_raises_on_decode_failure(make_image, tmp_path):
    import tensorflow as tf

    path = make_image(tmp_path / "a.jpg", (32, 32))
    path.write_bytes(path.read_bytes()[:200])
    ds = images.dataset([_record(path, (32, 32), "0")], validate.Report(strict=True))
    with pytest.raises(tf.errors.OpError, match="corrupt image"):
        list(ds)


def test_empty_record_list_gives_empty_dataset_with_canonical_spec():
    from tfzoo.data import schema

    ds = images.dataset([], validate.Report())
    assert list(ds) == []
    assert set(ds.element_spec) == set(schema.KEYS)
    assert ds.element_spec[schema.BOXES].shape.as_list() == [None, 4]


def test_float_images_are_refused_as_unsupported(tmp_path):
    Image.fromarray(np.full([4, 5], 0.5, np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(images.ImageError) as info:
        images.decode_image(tmp_path / "f.tiff")
    assert info.value.problem == validate.UNSUPPORTED_IMAGE
