"""The toy scenes (src.toy.shapes): COCO's 80 classes as distinct looks, label sets kept, sizes that vary."""
import math

import numpy as np
import pytest

from src.data.class_names import COCO_2014_CATEGORIES
from src.toy.shapes import (CATEGORY_IDS, CLASSES, NUM_CLASSES, max_objects, radius_bounds, render_scene,
                            render_single, sample_radii, scene_classes)


def test_classes_are_cocos_with_distinct_looks():
    assert NUM_CLASSES == 80
    assert [c.name for c in CLASSES] == [n for _, n in COCO_2014_CATEGORIES]
    assert CATEGORY_IDS == tuple(sorted(CATEGORY_IDS)) and CATEGORY_IDS[0] == 1 and CATEGORY_IDS[-1] == 90
    assert len({(c.shape, c.hue, c.striped) for c in CLASSES}) == NUM_CLASSES
    assert len({c.look for c in CLASSES}) == NUM_CLASSES
    # no attribute alone tells a class: each shape, hue and fill is shared by several classes
    for attr in ("shape", "hue", "striped"):
        values = [getattr(c, attr) for c in CLASSES]
        assert min(values.count(v) for v in set(values)) >= 8, attr


def test_every_class_renders_a_visible_object():
    for c in range(NUM_CLASSES):
        x = np.asarray(render_single(np.random.default_rng(c), 48, c), dtype=np.float64)
        sat = x.max(-1) - x.min(-1)  # objects are saturated, the background is not
        assert (sat > 60).sum() > 48 * 48 * 0.04, CLASSES[c].name


def test_scene_keeps_every_label_and_bounds_the_objects():
    rng = np.random.default_rng(0)
    for k in (1, 3, 8, 18):
        labels = list(rng.choice(NUM_CLASSES, size=k, replace=False))
        for size in (32, 64):
            objects = scene_classes(np.random.default_rng([k, size]), labels, size)
            assert set(objects) == set(labels)  # every label drawn, extras only of labelled classes
            assert k <= len(objects) <= max_objects(size, k)
    assert max_objects(64, 3) == 16 and max_objects(32, 3) == 8 and max_objects(32, 18) == 18


def test_person_comes_in_crowds():
    counts = [scene_classes(np.random.default_rng(i), [0, 1], 64) for i in range(2000)]
    person = np.mean([c.count(0) for c in counts])
    bicycle = np.mean([c.count(1) for c in counts])
    assert person > 1.5 > bicycle > 1.0


def test_radii_are_log_uniform_and_shrink_with_crowding():
    lo, hi = radius_bounds(64, 1)
    assert lo == pytest.approx(0.045 * 64) and hi == pytest.approx(0.3 * 64)
    assert radius_bounds(64, 16)[1] < radius_bounds(64, 4)[1] < hi
    assert radius_bounds(32, 1)[0] == 2.0  # at least 2 px
    r = np.array(sample_radii(np.random.default_rng(0), 64, 1) + [
        v for i in range(4000) for v in sample_radii(np.random.default_rng(i), 64, 1)])
    assert lo <= r.min() and r.max() <= hi
    t = (np.log(r) - math.log(lo)) / (math.log(hi) - math.log(lo))  # uniform on [0, 1]
    assert abs(t.mean() - 0.5) < 0.02 and abs(t.var() - 1 / 12) < 0.01
    assert 0.1 < (r < 0.07 * 64).mean() < 0.35  # some objects are small


def test_crowded_scene_draws_every_label_inside_the_image():
    labels = list(range(0, 72, 4))  # 18 labels, as COCO's most crowded images
    img, objects = render_scene(np.random.default_rng(1), 64, labels)
    assert img.size == (64, 64)
    assert {o.class_index for o in objects} == set(labels)
    for o in objects:
        x, y, w, h = o.bbox
        assert o.area > 0 and w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64


@pytest.mark.parametrize("labels", [[], [0, 0], [80], [-1]])
def test_bad_label_sets_are_rejected(labels):
    with pytest.raises(ValueError, match="label"):
        render_scene(np.random.default_rng(0), 32, labels)
