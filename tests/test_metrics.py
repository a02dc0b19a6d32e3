import math
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from src.metrics import (missing_label_ranking, roc_auc, top_k_precision, 
    average_precision,
    mAP,
    missing_label_counts,
    missing_label_stats,
    missing_label_stats_from_counts,
    official_f_c,
    threshold_metrics,
)


def _random_case(n, c, pos_rate, seed, unique_float32=False):
    rng = np.random.default_rng(seed)
    targs = (rng.random((n, c)) < pos_rate).astype(np.int64)
    targs[rng.integers(0, n, size=c), np.arange(c)] = 1  # every class has a positive
    if unique_float32:  # distinct float32 scores, negative and positive (the packed-key path)
        preds = (rng.permutation(n * c).reshape(n, c) - n * c / 2).astype(np.float32) / 7
    else:  # float64 scores, not float32-exact (the stable-argsort path)
        preds = rng.normal(size=(n, c))
    return targs, preds


def _sklearn_ap(targs, preds):
    return np.array([average_precision_score(targs[:, k], preds[:, k]) for k in range(targs.shape[1])])


@pytest.mark.parametrize("n,c,pos_rate", [(50, 1, 0.3), (200, 5, 0.5), (1000, 20, 0.01), (300, 80, 0.04)])
@pytest.mark.parametrize("unique_float32", [False, True])
def test_matches_sklearn_without_ties(n, c, pos_rate, unique_float32):
    targs, preds = _random_case(n, c, pos_rate, seed=n + c, unique_float32=unique_float32)
    assert len(np.unique(preds)) == preds.size
    expected = _sklearn_ap(targs, preds)
    np.testing.assert_allclose(average_precision(targs, preds), expected, rtol=1e-10, atol=1e-12)
    assert mAP(targs, preds) == pytest.approx(100 * expected.mean(), rel=1e-10)


def test_hand_computed_two_classes():
    # class 0: scores 0.9 0.8 0.7 0.6, positives at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2 = 5/6
    # class 1: ranking 0.4 0.3 0.2 0.1, the only positive (0.1) at rank 4 -> AP = 1/4
    # mAP = 100 * (5/6 + 1/4) / 2 = 54.1666...
    preds = np.array([[0.9, 0.1], [0.8, 0.4], [0.7, 0.3], [0.6, 0.2]], dtype=np.float32)
    targs = np.array([[1, 1], [0, 0], [1, 0], [0, 0]])
    np.testing.assert_allclose(average_precision(targs, preds), [5 / 6, 1 / 4])
    assert mAP(targs, preds) == pytest.approx(100 * (5 / 6 + 1 / 4) / 2)


@pytest.mark.parametrize("dtype,value", [(np.float32, 0.0), (np.float64, 0.0), (np.float64, 0.1)])
def test_constant_scores_give_chance_whatever_the_row_order(dtype, value):
    """All scores equal: AP = the positive rate, whichever row holds the positive (ranking ties by row order
    gave 1.0 to a positive in row 0: a collapsed model scored above chance). value 0: row 1 holds -0.0, which
    ties with 0.0; float64 0.1 is not float32-exact and takes the stable-argsort path."""
    preds = np.full((3, 2), value, dtype=dtype)
    if value == 0.0:
        preds[1] = -0.0
    targs = np.array([[0, 1], [1, 0], [0, 0]])
    np.testing.assert_allclose(average_precision(targs, preds), [1 / 3, 1 / 3])
    np.testing.assert_allclose(average_precision(targs, preds), _sklearn_ap(targs, preds))


@pytest.mark.parametrize("levels", [1, 2, 5, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_sklearn_with_ties(levels, dtype):
    """Scores drawn from a few values (many ties), positives at random: sklearn's value, class by class."""
    rng = np.random.default_rng(levels)
    targs = (rng.random((300, 12)) < 0.2).astype(np.int64)
    targs[0] = 1
    preds = (rng.integers(0, levels, size=(300, 12)) / 7).astype(dtype)
    np.testing.assert_allclose(average_precision(targs, preds), _sklearn_ap(targs, preds), rtol=1e-12)
    # the row order inside a tie no longer matters
    perm = rng.permutation(300)
    np.testing.assert_allclose(average_precision(targs[perm], preds[perm]), average_precision(targs, preds),
                               rtol=1e-12)


def test_without_ties_the_value_is_bit_for_bit_the_official_formula():
    targs, preds = _random_case(500, 10, 0.1, seed=3, unique_float32=True)
    ap = average_precision(targs, preds)
    for k in range(10):
        order = np.argsort(-preds[:, k], kind="stable")
        hits = np.cumsum(targs[order, k])
        ranks = np.flatnonzero(targs[order, k])
        assert ap[k] == sum((hits[ranks] / (ranks + 1.0)).tolist()) / ranks.size  # summed in order, as bincount


def test_class_without_positive_is_left_out_with_warning():
    # class 1 has no positive: mAP is the mean over classes 0 and 2 only.
    # class 0: positive 0.9 ranked 1 -> AP 1; class 2: ranking 0.8, 0.5 (positive), 0.1 -> AP 1/2
    preds = np.array([[0.9, 0.5, 0.5], [0.1, 0.4, 0.8], [0.5, 0.3, 0.1]])
    targs = np.array([[1, 0, 1], [0, 0, 0], [0, 0, 0]])
    with pytest.warns(UserWarning, match=r"1 of 3 classes .* \[1\]"):
        value = mAP(targs, preds)
    assert value == pytest.approx(100 * (1.0 + 0.5) / 2)
    ap = average_precision(targs, preds)
    assert math.isnan(ap[1]) and ap[0] == 1.0


def test_no_positive_at_all_raises():
    with pytest.raises(ValueError, match="none of the 2 classes"):
        mAP(np.zeros((4, 2)), np.random.default_rng(0).random((4, 2)))


def test_full_coverage_has_no_warning():
    targs, preds = _random_case(100, 4, 0.3, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mAP(targs, preds)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_torch_inputs_equal_numpy(dtype):
    targs, preds = _random_case(300, 6, 0.2, seed=3)
    preds_t = torch.from_numpy(preds).to(dtype)
    reference = preds_t.float().numpy().astype(np.float64)  # the values after rounding to dtype
    expected = mAP(targs, reference)
    assert mAP(torch.from_numpy(targs), preds_t) == pytest.approx(expected, rel=1e-12)
    assert mAP(torch.from_numpy(targs).bool(), preds_t) == pytest.approx(expected, rel=1e-12)


def test_bad_inputs_raise():
    targs, preds = _random_case(10, 3, 0.3, seed=4)
    with pytest.raises(ValueError, match="same shape"):
        mAP(targs, preds[:, :2])
    with pytest.raises(ValueError, match="2-D"):
        mAP(targs[:, 0], preds[:, 0])
    with pytest.raises(ValueError, match="binary"):
        mAP(targs * 2, preds)
    preds[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mAP(targs, preds)


def test_map_speed_coco_val_size():
    # 40,137 x 80 like COCO val2014; the official per-class numpy loop takes ~0.06-0.2 s.
    rng = np.random.default_rng(0)
    preds = rng.random((40137, 80)).astype(np.float32)
    targs = rng.random((40137, 80)) < 0.04
    start = time.perf_counter()
    mAP(targs, preds)
    assert time.perf_counter() - start < 3.0


def test_threshold_metrics_hand_case():
    # pred = preds > 0.5 (strict: 0.5 itself is not predicted)
    # class 0: tp 2, fp 1, fn 0 -> P 2/3, R 1 | class 1: tp 1, fp 1, fn 1 -> P 1/2, R 1/2
    # class 2: tp 0 (never predicted)  -> P 0, R 0
    # CP = (2/3 + 1/2 + 0) / 3 = 7/18, CR = 1/2, CF1 = 2 CP CR / (CP + CR) = 7/16
    # overall: tp 3, tp + fp 5, tp + fn 5 -> OP = OR = OF1 = 3/5
    targs = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    preds = np.array([[0.9, 0.2, 0.4], [0.6, 0.7, 0.1], [0.8, 0.3, 0.2], [0.1, 0.9, 0.5]])
    m = threshold_metrics(targs, preds, threshold=0.5)
    expected = {"cp": 700 / 18, "cr": 50.0, "cf1": 43.75, "op": 60.0, "or": 60.0, "of1": 60.0}
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key


def test_threshold_metrics_matches_sklearn_macro_micro():
    targs, _ = _random_case(500, 10, 0.2, seed=5)
    preds = np.random.default_rng(6).random(targs.shape)
    m = threshold_metrics(torch.from_numpy(targs), torch.from_numpy(preds).float(), threshold=0.7)
    pred = preds > 0.7
    kw = dict(zero_division=0)
    assert m["cp"] == pytest.approx(100 * precision_score(targs, pred, average="macro", **kw))
    assert m["cr"] == pytest.approx(100 * recall_score(targs, pred, average="macro", **kw))
    assert m["op"] == pytest.approx(100 * precision_score(targs, pred, average="micro", **kw))
    assert m["or"] == pytest.approx(100 * recall_score(targs, pred, average="micro", **kw))


def test_threshold_metrics_nothing_predicted_and_logits():
    targs = np.array([[1, 0], [0, 1]])
    m = threshold_metrics(targs, np.zeros((2, 2)))
    assert m == {"cp": 0.0, "cr": 0.0, "cf1": 0.0, "op": 0.0, "or": 0.0, "of1": 0.0}
    with pytest.raises(ValueError, match="probabilities"):
        threshold_metrics(targs, np.array([[3.0, -2.0], [0.1, 0.2]]))


# missing = full & ~observed: (0,1), (1,0) -> 2 missing labels
# predicted (> 0.5) on unannotated labels: (0,1), (0,2) -> 2; of those on missing labels: (0,1) -> 1
# precision = 1/2, recall = 1/2
FULL = [[1, 1, 0], [1, 0, 1]]
OBSERVED = [[1, 0, 0], [0, 0, 1]]
PROBS = [[0.9, 0.8, 0.7], [0.2, 0.1, 0.6]]


def test_missing_label_hand_case():
    full, observed, probs = torch.tensor(FULL), torch.tensor(OBSERVED), torch.tensor(PROBS)
    counts = missing_label_counts(full, observed, probs, 0.5)
    assert counts.dtype == torch.int64 and counts.device == probs.device
    assert counts.tolist() == [1, 2, 2]
    stats = missing_label_stats(full, observed, probs, 0.5)
    assert stats == {"missing_precision": 50.0, "missing_recall": 50.0, "missing_count": 2}
    # per-batch counts summed give the same as the whole set
    batched = sum(missing_label_counts(full[i:i + 1], observed[i:i + 1], probs[i:i + 1], 0.5)
                  for i in range(2))
    assert missing_label_stats_from_counts(batched) == stats
    # numpy / float / bool inputs
    assert missing_label_stats(np.array(FULL, dtype=np.float32), np.array(OBSERVED, dtype=bool),
                               np.array(PROBS), 0.5) == stats


def test_missing_label_stats_undefined_is_nan():
    full = torch.tensor(FULL)
    stats = missing_label_stats(full, full, torch.zeros(2, 3), 0.5)  # nothing missing, nothing predicted
    assert math.isnan(stats["missing_precision"]) and math.isnan(stats["missing_recall"])
    assert stats["missing_count"] == 0
    with pytest.raises(ValueError, match="one shape"):
        missing_label_counts(full, full[:1], torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="counts"):
        missing_label_stats_from_counts([1, 2])


# ----------------------------------------------------------------------------- threshold-free missing-label figures

@pytest.mark.parametrize("scores, labels", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]),
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]),                       # all tied: 0.5
    ([0.2, 0.7, 0.7, 0.7, 0.1, 0.9], [1, 0, 1, 1, 0, 0]),       # a tie across the classes
    ([3.0, 1.0, 2.0], [1, 0, 0]),
])
def test_roc_auc_equals_sklearn_with_ties(scores, labels):
    assert roc_auc(np.array(scores), np.array(labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_equals_sklearn_on_random_quantised_scores():
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.1
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # quantised: many ties
    assert roc_auc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, scores),
                                                                                   abs=1e-12)


def test_roc_auc_undefined_and_bad_input():
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1])) and math.isnan(roc_auc([0.1, 0.2], [0, 0]))
    with pytest.raises(ValueError, match="binary"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="same size"):
        roc_auc([0.1, 0.2], [0, 1, 1])


def test_top_k_precision_hand_cases():
    scores, labels = [0.9, 0.8, 0.7, 0.6, 0.1], [1, 0, 1, 0, 1]
    assert top_k_precision(scores, labels, 1) == 1.0
    assert top_k_precision(scores, labels, 2) == 0.5
    assert top_k_precision(scores, labels, 3) == pytest.approx(2 / 3)
    # a tie at the cut: 0.9 (pos) above, then 0.5 x 3 (one positive) for the last 1 place: (1 + 1/3) / 2
    assert top_k_precision([0.9, 0.5, 0.5, 0.5], [1, 1, 0, 0], 2) == pytest.approx((1 + 1 / 3) / 2)
    assert math.isnan(top_k_precision(scores, labels, 0))
    with pytest.raises(ValueError, match="k must"):
        top_k_precision(scores, labels, 6)


def test_missing_label_ranking_hand_case():
    # unobserved: (0,1) 0.8 missing, (0,2) 0.7 negative, (1,0) 0.2 missing, (1,1) 0.1 negative
    # pairs missing > negative: 0.8>0.7, 0.8>0.1, 0.2>0.1 (not 0.2>0.7): 3/4; top-2: 0.8 (missing), 0.7: 1/2
    got = missing_label_ranking(torch.tensor(FULL), torch.tensor(OBSERVED), torch.tensor(PROBS))
    assert got == {"missing_auroc": pytest.approx(75.0), "missing_topk_precision": pytest.approx(50.0)}
    none_missing = missing_label_ranking(torch.tensor(FULL), torch.tensor(FULL), torch.tensor(PROBS))
    assert all(math.isnan(v) for v in none_missing.values())
    with pytest.raises(ValueError, match="one shape"):
        missing_label_ranking(torch.tensor(FULL), torch.tensor(OBSERVED)[:1], torch.tensor(PROBS))


def test_official_f_c_is_the_mean_of_per_class_f1_not_cf1():
    """Class 0: P 1/2, R 1 (F1 2/3); class 1: P 1, R 1/2 (F1 2/3); class 2: never predicted (F1 0)."""
    targets = np.array([[1, 1, 1], [0, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.9, 0.1], [0.9, 0.1, 0.1], [0.1, 0.1, 0.1]])
    f_c = official_f_c(targets, scores, 0.5)
    assert f_c == pytest.approx(100 * (2 / 3 + 2 / 3 + 0) / 3)
    cp, cr = 100 * (1 / 2 + 1 + 0) / 3, 100 * (1 + 1 / 2 + 0) / 3
    assert threshold_metrics(targets, scores, 0.5)["cf1"] == pytest.approx(2 * cp * cr / (cp + cr))
    assert abs(f_c - 2 * cp * cr / (cp + cr)) > 1  # the two definitions differ here
