"""tfzoo.draw: boxes and labels drawn where the detections are."""
import os

import numpy as np

from tfzoo.draw import class_color, draw_detections, save_png_atomic


def test_boxes_are_drawn_in_the_class_colour_at_their_pixels(tmp_path):
    image = np.zeros([120, 200, 3], np.uint8)
    drawn = np.asarray(draw_detections(image, [[40.0, 50.0, 100.0, 150.0]], [2], [0.87], ["a", "b", "c"]))
    assert drawn.shape == image.shape
    color = class_color(2)
    assert tuple(drawn[70, 50]) == color and tuple(drawn[70, 150]) == color  # left and right edges
    assert tuple(drawn[100, 100]) == color  # bottom edge
    assert tuple(drawn[70, 100]) == (0, 0, 0)  # inside stays untouched
    assert (drawn[:40, 50:150] != 0).any()  # the label sits above the box
    assert np.array_equal(image, np.zeros_like(image))  # the input is not modified
    path = tmp_path / "drawn.png"
    save_png_atomic(draw_detections(image, np.zeros([0, 4]), [], [], []), str(path))
    assert os.listdir(tmp_path) == ["drawn.png"]
