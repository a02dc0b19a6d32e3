"""The toy scenes (src.toy.shapes): COCO-like label statistics, every class visible."""
import numpy as np

from src.toy.shapes import CLASSES, COOCCUR_GROUPS, NUM_CLASSES, render_single, sample_classes


def test_scene_statistics_like_coco():
    draws = [sample_classes(np.random.default_rng([7, i])) for i in range(3000)]
    labels = [sorted(set(d)) for d in draws]
    assert all(1 <= len(d) <= 8 for d in draws)
    assert 2.75 < np.mean([len(l) for l in labels]) < 3.1  # COCO: 2.94
    y = np.zeros((len(labels), NUM_CLASSES))
    for i, l in enumerate(labels):
        y[i, l] = 1
    prevalence = y.mean(0)
    assert prevalence[0] > 0.4 and prevalence[0] > 5 * prevalence.min() > 0  # imbalanced, none absent
    a, b = COOCCUR_GROUPS[1][:2]
    lift = (y[:, a] * y[:, b]).mean() / (prevalence[a] * prevalence[b])
    assert lift > 2  # partners co-occur more often than by chance


def test_every_class_renders_a_visible_object():
    for c in range(NUM_CLASSES):
        x = np.asarray(render_single(np.random.default_rng(c), 48, c), dtype=np.float64)
        sat = x.max(-1) - x.min(-1)  # objects are saturated, the background is not
        assert (sat > 60).sum() > 48 * 48 * 0.04, CLASSES[c].name
