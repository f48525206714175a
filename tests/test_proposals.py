"""tfzoo.proposals: selective search, its on-disk cache, a user's proposals file, recall,
proposals in tf.data, and `tfzoo proposals`."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tfzoo.data
from tfzoo import cli
from tfzoo import proposals as P
from tfzoo.data import validate

from tests.reference import pairwise_iou as iou_np


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TFZOO_CACHE", str(root))
    return root


def _image_with_square(size=120, box=(30, 40, 90, 100), seed=0):
    """A noisy grey image with one saturated red rectangle (pixels y1, x1, y2, x2)."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(128, 8, (size, size, 3))).clip(0, 255).astype(np.uint8)
    y1, x1, y2, x2 = box
    image[y1:y2, x1:x2] = (220, 20, 20)
    return image


def test_opencv_rectangles_become_ranked_normalized_yxyx():
    rects = np.array([[10, 20, 30, 40],  # x, y, w, h
                      [0, 0, 100, 50],
                      [10, 20, 30, 40],  # a duplicate of the first: dropped, the first kept in place
                      [5, 5, 0, 10],  # empty: dropped
                      [90, 40, 20, 20]], np.float64)  # past the right edge: clipped
    boxes = P._ranked_boxes(rects, height=50, width=100, max_boxes=10)
    np.testing.assert_allclose(boxes, [[0.4, 0.1, 1.0, 0.4], [0.0, 0.0, 1.0, 1.0], [0.8, 0.9, 1.0, 1.0]])
    assert boxes.dtype == np.float32
    assert len(P._ranked_boxes(rects, 50, 100, max_boxes=2)) == 2


@pytest.mark.parametrize("method", P.METHODS)
def test_selective_search_finds_the_object(method):
    image = _image_with_square()
    boxes = P.selective_search(image, P.Settings(method, max_boxes=50))
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and 0 < len(boxes) <= 50
    assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] > boxes[:, :2])
    truth = np.array([[30, 40, 90, 100]], np.float32) / 120
    assert iou_np(boxes, truth).max() > 0.8


def test_large_images_are_searched_at_max_side():
    small = _image_with_square(size=120)
    large = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)  # 480 px: searched at 120
    a = P.selective_search(small, P.Settings(max_side=120))
    b = P.selective_search(large, P.Settings(max_side=120))
    assert abs(len(a) - len(b)) <= 0.1 * len(a)
    assert iou_np(b, np.array([[30, 40, 90, 100]], np.float32) / 120).max() > 0.8


def test_bad_images_and_settings_are_named():
    with pytest.raises(ValueError, match="uint8"):
        P.selective_search(np.zeros([10, 10], np.uint8))
    with pytest.raises(ValueError, match="method"):
        P.Settings("slow")
    with pytest.raises(ValueError, match="max_boxes"):
        P.Settings(max_boxes=0)


def test_cache_is_keyed_by_pixels_and_settings(cache):
    image = _image_with_square()
    fast = P.Settings("fast", 100)
    boxes, computed = P.cached_selective_search(image, fast)
    assert computed
    path = P.entry_path(P.image_key(image), fast)
    assert path.startswith(str(cache)) and os.path.isfile(path)
    again, computed = P.cached_selective_search(image, fast)
    assert not computed and np.array_equal(again, boxes)
    # other settings, other folder; an edited image, another key
    assert P.entry_path(P.image_key(image), P.Settings("quality", 100)) != path
    assert P.entry_path(P.image_key(image), P.Settings("fast", 200)) != path
    edited = image.copy()
    edited[0, 0, 0] ^= 1
    assert P.image_key(edited) != P.image_key(image)
    assert P.image_key(image.reshape(60, 240, 3)) != P.image_key(image)  # same bytes, another shape
    leftovers = [n for _, _, names in os.walk(cache) for n in names if not n.endswith(".npy")]
    assert leftovers == []  # atomic writes leave no temporary file


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong shape", "out of range", "nan", "too many"])
def test_a_corrupt_cache_entry_is_recomputed(damage):
    image = _image_with_square()
    settings = P.Settings("fast", 100)
    good, _ = P.cached_selective_search(image, settings)
    path = P.entry_path(P.image_key(image), settings)
    if damage == "garbage":
        with open(path, "wb") as f:
            f.write(b"not numpy")
    elif damage == "empty":
        open(path, "wb").close()
    else:
        bad = {"wrong shape": np.zeros([5, 3], np.float32), "out of range": np.full([5, 4], 2.0, np.float32),
               "nan": np.full([5, 4], np.nan, np.float32), "too many": np.zeros([101, 4], np.float32)}[damage]
        np.save(path, bad)
    boxes, computed = P.cached_selective_search(image, settings)
    assert computed and np.array_equal(boxes, good)
    assert np.array_equal(P.read_entry(path, settings), good)


def test_compute_fills_the_cache_in_processes_and_resumes():
    examples = tfzoo.data.load("shapes:4", "val")
    settings = P.Settings("fast", 300)
    first = P.compute(examples.take(2), settings, workers=1, progress=False)
    assert (first.images, first.computed, first.cached) == (2, 2, 0) and first.seconds_per_image > 0
    rest = P.compute(examples, settings, workers=2, progress=False)  # as after an interrupted run
    assert (rest.images, rest.computed, rest.cached) == (4, 2, 2)
    again = P.compute(examples, settings, workers=2, progress=False)
    assert (again.computed, again.cached) == (0, 4) and np.isnan(again.seconds_per_image)
    for example in examples.as_numpy_iterator():
        expected = P.selective_search(example["image"], settings)
        assert np.array_equal(P.read_entry(P.entry_path(P.image_key(example["image"]), settings), settings),
                              expected)


def test_recall_against_a_hand_count():
    truth = [np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32), np.zeros([0, 4], np.float32),
             np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)]
    props = [np.array([[0.0, 0.0, 0.5, 0.4],  # IoU 0.8 with the first box
                       [0.5, 0.5, 1.0, 0.8]], np.float32),  # IoU 0.6 with the second: only at top 2
             np.array([[0.1, 0.1, 0.2, 0.2]], np.float32),  # no ground truth: not counted
             np.zeros([0, 4], np.float32)]  # no proposals: a miss
    got = P.recall(props, truth, tops=(1, 2), ious=(0.5, 0.7))
    assert got == {(1, 0.5): 1 / 3, (1, 0.7): 1 / 3, (2, 0.5): 2 / 3, (2, 0.7): 1 / 3}
    assert np.isnan(P.recall([props[1]], [truth[1]], tops=(1,), ious=(0.5,))[(1, 0.5)])


def _write(path, payload):
    path.write_text(json.dumps(payload) if not isinstance(payload, str) else payload)
    return str(path)


def test_a_users_file_is_checked_and_normalized(tmp_path):
    sizes = {"a": (100, 200), "b": (50, 50), "c": (10, 10)}
    path = _write(tmp_path / "props.json", {
        "a": [[20, 10, 120, 60],  # kept: x1, y1, x2, y2 px -> yxyx normalized
              [0, 0, 10],  # malformed
              [1, 2, "x", 4],  # malformed
              [10, 10, 5, 20],  # inverted
              [10, 10, 10, 20],  # zero area
              [300, 0, 400, 10],  # outside
              [-20, -10, 50, 50]],  # partly outside: clipped
        "b": [[0, 0, 50, 50]],
        "zzz": [[0, 0, 1, 1]],  # an id the split does not have
    })
    payload = json.loads((tmp_path / "props.json").read_text())
    payload["b"].append([float("nan"), 0, 1, 1])
    (tmp_path / "props.json").write_text(json.dumps(payload))  # NaN (JSON's extension) as users' tools write it
    report = validate.Report()
    got = P.load_json(path, sizes, report)
    np.testing.assert_allclose(got["a"], [[0.1, 0.1, 0.6, 0.6], [0.0, 0.0, 0.5, 0.25]])
    np.testing.assert_allclose(got["b"], [[0.0, 0.0, 1.0, 1.0]])
    assert got["c"].shape == (0, 4) and "zzz" not in got
    found = {(p.record, p.problem, p.action) for p in report}
    assert found == {
        ("a row 1", validate.MALFORMED_ANNOTATION, validate.DROPPED_BOX),
        ("a row 2", validate.MALFORMED_ANNOTATION, validate.DROPPED_BOX),
        ("a row 3", validate.INVERTED, validate.DROPPED_BOX),
        ("a row 4", validate.ZERO_AREA, validate.DROPPED_BOX),
        ("a row 5", validate.OUTSIDE, validate.DROPPED_BOX),
        ("a row 6", validate.PARTLY_OUTSIDE, validate.CLIPPED_BOX),
        ("b row 1", validate.NON_FINITE, validate.DROPPED_BOX),
        ("zzz", P.UNKNOWN_ID, P.SKIPPED_PROPOSALS),
    }
    assert all(p.file == path for p in report)
    assert report.notes[P.NOTE_NO_PROPOSALS] == 1
    assert len(P.load_json(path, sizes, validate.Report(), max_boxes=1)["a"]) == 1


def test_a_broken_users_file_stops_with_its_name(tmp_path):
    for name, text in [("truncated.json", '{"a": [[1, 2'), ("list.json", "[[1, 2, 3, 4]]")]:
        path = _write(tmp_path / name, text)
        with pytest.raises(validate.DataError, match=name):
            P.load_json(path, {"a": (10, 10)})
    with pytest.raises(validate.DataError, match="unknown image id"):
        P.load_json(_write(tmp_path / "strict.json", {"q": []}), {"a": (10, 10)}, validate.Report(strict=True))


def test_attach_adds_proposals_from_the_cache_or_a_file():
    examples = tfzoo.data.load("shapes:3", "val")
    settings = P.Settings("fast", 50)
    with_props = list(P.attach(examples, settings).as_numpy_iterator())
    for example in with_props:
        assert np.array_equal(example["proposals"], P.selective_search(example["image"], settings))
    ids = [e["image_id"].decode() for e in with_props]
    source = {ids[0]: np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)}
    from_file = list(P.attach(examples, source).as_numpy_iterator())
    np.testing.assert_array_equal(from_file[0]["proposals"], source[ids[0]])
    assert from_file[1]["proposals"].shape == (0, 4)
    spec = P.attach(examples, source).element_spec["proposals"]
    assert spec.shape.as_list() == [None, 4] and spec.dtype == tf.float32
    with pytest.raises(TypeError, match="Settings"):
        P.attach(examples, "ss:fast")


def test_source_specs():
    assert P.parse_source("ss:fast") == ("ss", "fast") and P.parse_source("json:/a/b.json") == ("json", "/a/b.json")
    for bad in ("ss:slow", "json:", "edgeboxes"):
        with pytest.raises(ValueError, match="ss:fast"):
            P.parse_source(bad)


def test_tfzoo_proposals_command(capsys, tmp_path, cache):
    code = cli.main(["proposals", "--data", "shapes:3", "--split", "val", "--workers", "1", "--max", "300"])
    out = capsys.readouterr().out
    assert code == 0 and "3 computed, 0 cached" in out and "IoU 0.5" in out and "top  2000" in out
    code = cli.main(["proposals", "--data", "shapes:3", "--split", "val", "--max", "300", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and (result["computed"], result["cached"]) == (0, 3)
    assert set(result["recall"]) == {f"{t}@{i}" for t in P.RECALL_TOPS for i in P.RECALL_IOUS}
    assert result["images"] == 3 and result["proposals_per_image"] > 0 and result["cache"] == str(cache)
    # a user's file instead: its problems are listed, the recall is its own
    ids = [e["image_id"].decode() for e in tfzoo.data.load("shapes:3", "val").as_numpy_iterator()]
    path = _write(tmp_path / "mine.json", {ids[0]: [[0, 0, 10, 10]], "nope": []})
    code = cli.main(["proposals", "--data", "shapes:3", "--split", "val", "--file", path, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["source"] == f"json:{path}" and result["min_proposals"] == 0
    assert any("unknown image id" in p and "nope" in p for p in result["problems"])


def test_compute_starts_no_process_when_everything_is_cached(monkeypatch):
    examples = tfzoo.data.load("shapes:2", "val")
    settings = P.Settings("fast", 100)
    P.compute(examples, settings, workers=1, progress=False)
    import multiprocessing

    def refuse(*args, **kwargs):
        raise AssertionError("a process pool started with nothing to compute")

    monkeypatch.setattr(multiprocessing, "get_context", refuse)
    again = P.compute(examples, settings, workers=2, progress=False)
    assert (again.images, again.computed, again.cached) == (2, 0, 2)


def test_a_users_file_against_part_of_a_split_does_not_report_the_rest(tmp_path):
    path = _write(tmp_path / "props.json", {"a": [[0, 0, 5, 5]], "later": [[0, 0, 5, 5]]})
    report = validate.Report(strict=True)  # the first problem would raise
    got = P.load_json(path, {"a": (10, 10)}, report, subset=True)
    assert list(got) == ["a"] and not len(report)


def test_tfzoo_proposals_json_is_strict_json(capsys):
    assert cli.main(["proposals", "--data", "shapes:2", "--split", "val", "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    assert cli.main(["proposals", "--data", "shapes:2", "--split", "val", "--max", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert result["seconds_per_image"] is None and result["cached"] == 2  # all cached: no timing
    assert result["settings"]["max_boxes"] == P.DEFAULT_MAX_BOXES  # the presets' cache, cut to 10 for recall
