"""The foundation's bad-input cases through ``tfzoo train``, ``evaluate`` and ``predict`` of
one preset of every family: a VOC folder with a broken image, a broken annotation file, a
box out of the image, an unknown class, a NaN coordinate and a path that escapes the
dataset root. Every command goes on without the bad records and names each one (file,
record, problem, what was done); ``--strict`` stops at the first before any work; the
dataset's files are never modified."""
import json
import re

import pytest

from tfzoo import cli
from tests.data.conftest import tree_hash
from tests.models.conftest import tiny_settings

#: One preset per data path: a single-stage head on anchors (RetinaNet; SSD's encoder is the
#: same shared matcher on other anchors), the RPN, the proposal-based path (R-CNN: the
#: proposals a second input, as Fast R-CNN and SPP-Net take them, then its post-fit
#: stages), and both YOLO codebases (their own cell encoders).
FAMILIES = ["retinanet_mobile", "faster_rcnn_mobile", "rcnn_mobile", "yolov1_tiny", "yolov3_tiny"]

#: (image index, what is damaged, the problem the reader names, what it does).
DAMAGE = [
    (0, "image", "not an image", "skipped image"),
    (1, "annotation", "malformed annotation", "skipped image"),
    (2, "box", "box partly outside image", "clipped box"),
    (3, "class", "unknown class", "dropped box"),
    (4, "nan", "non-finite coordinate", "dropped box"),
    (5, "escape", "path escapes dataset root", "skipped image"),
]


def _with_an_object(path):
    return "<object>" in path.read_text()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """``(root, {index: file named in the problem}, hash)``: shapes' first 16 training images as a
    VOC folder, six of them damaged as :data:`DAMAGE` says."""
    import tfzoo.data
    from tfzoo.data import voc

    base = tmp_path_factory.mktemp("bad_input")
    root = base / "voc"
    examples = list(tfzoo.data.load("shapes:16", "train").as_numpy_iterator())
    voc.write(examples, root, "train", tfzoo.data.class_names("shapes"))
    annotations = sorted((root / "Annotations").glob("*.xml"))
    images = sorted((root / "JPEGImages").glob("*.jpg"))
    # the boxes are damaged in files that hold one (a shapes image may have none)
    with_boxes = [i for i, path in enumerate(annotations) if _with_an_object(path)]
    index = {0: 0, 1: 1, 5: 5}
    index.update(zip((2, 3, 4), [i for i in with_boxes if i not in (0, 1, 5)]))
    named = {}
    for case, kind, _, _ in DAMAGE:
        xml = annotations[index[case]]
        text = xml.read_text()
        if kind == "image":
            images[index[case]].write_bytes(b"\xff\xd8 not a jpeg")
            named[case] = images[index[case]]
            continue
        if kind == "annotation":
            xml.write_text(text[: len(text) // 2])
        elif kind == "box":
            xml.write_text(re.sub(r"<xmax>[^<]*</xmax>", "<xmax>100000</xmax>", text, count=1))
        elif kind == "class":
            xml.write_text(re.sub(r"<name>[^<]*</name>", "<name>unicorn</name>", text, count=1))
        elif kind == "nan":
            xml.write_text(re.sub(r"<ymin>[^<]*</ymin>", "<ymin>nan</ymin>", text, count=1))
        elif kind == "escape":  # a real image waits outside the root
            (base / "secret.jpg").write_bytes(images[6].read_bytes())
            xml.write_text(re.sub(r"<filename>[^<]*</filename>", "<filename>../../secret.jpg</filename>", text))
        named[case] = xml
    return root, named, tree_hash(base)


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_every_problem_named(err, root, named, where):
    assert f"voc:{root} [train]: {len(DAMAGE)} data problems were repaired or skipped ({where})" in err, err
    for _, _, problem, action in DAMAGE:
        count = len([d for d in DAMAGE if (d[2], d[3]) == (problem, action)])
        assert f"{count} x {problem} ({action})" in err
    # the first three in full: file, record and problem
    shown = [(named[case], problem) for case, _, problem, _ in DAMAGE if str(named[case]) in err]
    assert len(shown) == 3, err
    for path, problem in shown:
        assert re.search(re.escape(str(path)) + r"( \[[^\]]+\])?: " + re.escape(problem), err), (path, problem)


def _settings(model):
    """``tfzoo train`` arguments of ``model``'s tiny config (YOLOv1: its fixed 256, the grid
    its trunk's 4 x 4 map; the others at 64)."""
    if model == "yolov1_tiny":
        settings, size = tiny_settings(model) + ["image_size=256"], []
    else:
        settings, size = tiny_settings(model), ["--image-size", "64"]
    return [arg for setting in settings for arg in ("--set", setting)] + size


@pytest.mark.slow
@pytest.mark.parametrize("model", FAMILIES)
def test_train_evaluate_and_predict_go_on_without_the_bad_records_and_name_them(model, damaged, tmp_path, capsys):
    root, named, before = damaged
    run_dir = tmp_path / "run"
    code, out, err = _run(["train", model, "--data", f"voc:{root}", "--epochs", "1", "--batch-size", "4",
                           "--out", str(run_dir), *_settings(model)], capsys)
    assert code == 0, err
    _assert_every_problem_named(err, root, named, "training goes on without them")
    assert (run_dir / "model.keras").is_file()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["finished"] and state["step"] >= 2  # 16 records, 3 images skipped, batch 4

    code, out, err = _run(["evaluate", str(run_dir / "model.keras"), "--data", f"voc:{root}", "--split", "train"],
                          capsys)
    assert code == 0, err
    _assert_every_problem_named(err, root, named, "scored without them")
    assert re.search(r"AP50\s+\d\.\d{4}", out)
    # the images read (13 of 16) were scored, their good boxes included
    objects = int(re.search(r"\[train\]: (\d+) objects", out).group(1))
    assert objects > 0

    broken = named[0]
    good = sorted((root / "JPEGImages").glob("*.jpg"))[-1]
    code, out, err = _run(["predict", str(run_dir / "model.keras"), str(good), str(broken), "--out",
                           str(tmp_path / "predictions")], capsys)
    assert code == 1 and broken.name in err  # the broken image is named, the good one done
    result = json.loads((tmp_path / "predictions" / "detections.json").read_text())
    assert [entry["file"] for entry in result["images"]] == [str(good)]
    assert [entry["file"] for entry in result["failed"]] == [str(broken)]
    assert tree_hash(root.parent) == before  # nothing in the dataset was touched


def test_strict_training_stops_at_the_first_problem_before_any_work(damaged, tmp_path, capsys):
    root, named, before = damaged
    code, out, err = _run(["train", "retinanet_mobile", "--data", f"voc:{root}", "--epochs", "1", "--strict",
                           "--out", str(tmp_path / "run"), *_settings("retinanet_mobile")], capsys)
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("tfzoo: error: ") and str(root) in line
    assert any(str(path) in line and problem in line for (_, _, problem, _), path
               in zip(DAMAGE, [named[c] for c, *_ in DAMAGE])), line
    assert not (tmp_path / "run" / "model.keras").exists()
    assert tree_hash(root.parent) == before


def test_strict_evaluate_stops_at_the_first_problem(damaged, tmp_path, capsys):
    root, named, _ = damaged
    detections = tmp_path / "none.json"
    detections.write_text("[]")
    code, out, err = _run(["evaluate", "--detections", str(detections), "--data", f"voc:{root}", "--split", "train",
                           "--strict"], capsys)
    assert code == 1 and err.count("\n") == 1 and str(root) in err


def test_an_image_that_fails_only_when_decoded_is_named_after_training(tmp_path, capsys):
    """A JPEG whose header reads but whose data is cut passes the check when the split is
    opened; training skips it every epoch and names it once at the end."""
    import tfzoo.data
    from tfzoo.data import voc

    root = tmp_path / "voc"
    voc.write(list(tfzoo.data.load("shapes:9", "train").as_numpy_iterator()), root, "train",
              tfzoo.data.class_names("shapes"))
    cut = sorted((root / "JPEGImages").glob("*.jpg"))[3]
    cut.write_bytes(cut.read_bytes()[:-600])
    before = tree_hash(root)
    code, out, err = _run(["train", "retinanet_mobile", "--data", f"voc:{root}", "--epochs", "2", "--batch-size", "4",
                           "--out", str(tmp_path / "run"), *_settings("retinanet_mobile")], capsys)
    assert code == 0, err
    assert "data problems were repaired or skipped" not in err  # nothing found when the split opened
    assert re.search(rf"voc:{re.escape(str(root))} \[train\]: 1 more data problems found while reading, skipped every "
                     rf"time: {re.escape(str(cut))}: corrupt image", err), err
    assert tree_hash(root) == before
