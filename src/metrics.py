"""Multi-label evaluation metrics: mAP, threshold metrics (CP/CR/CF1, OP/OR/OF1), missing-label stats.

Every metric here is a percentage (0-100). Inputs are N x C (samples x classes) numpy arrays or torch
tensors of any float dtype and device; targets are binary (0/1 or bool).

Ranking convention (mAP): scores are sorted in descending order; without ties this is the official
formula and equals ``sklearn.metrics.average_precision_score`` averaged over classes. A group of equal
scores is one threshold, as in sklearn (the official code ranked ties in numpy's unstable argsort
order, so its value with ties was unspecified and could reward the order of the rows): constant
scores give each class its positive rate, chance.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

__all__ = [
    "mAP",
    "average_precision",
    "threshold_metrics",
    "official_f_c",
    "missing_label_counts",
    "missing_label_stats_from_counts",
    "missing_label_stats",
    "roc_auc",
    "top_k_precision",
    "missing_label_ranking",
]


# ----------------------------------------------------------------------------- input handling

def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A detached host copy of a tensor (bf16/fp16 upcast to fp32) or ``np.asarray(x)``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}") from e


def _check_pair(targs: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``targs``/``preds`` (same N x C shape, binary targets, finite scores); return (bool, float)."""
    t = _to_numpy(targs, "targs")
    p = _to_numpy(preds, "preds")
    if t.ndim != 2 or p.ndim != 2:
        raise ValueError(f"targs and preds must be N x C (2-D); got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"targs and preds must have the same shape; got {t.shape} and {p.shape}")
    if t.dtype != np.bool_:
        binary = (t == 0) | (t == 1)
        if not binary.all():
            bad = np.unique(t[~binary])[:5]
            raise ValueError(f"targs must be binary (0/1); found values {bad.tolist()}")
        t = t.astype(bool)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if not np.isfinite(p).all():
        raise ValueError(f"preds contain {int((~np.isfinite(p)).sum())} NaN/inf values")
    return t, p


# ----------------------------------------------------------------------------- mAP

def _descending_order(p: np.ndarray) -> np.ndarray:
    """Row-wise ranking of a C x N score array: descending, ties by ascending column index.

    float32 scores (and float64 ones that are exactly float32) are sorted through a packed uint64 key:
    high 32 bits = order-preserving bits of -score, low 32 bits = column index. The keys are unique,
    so numpy's fast unstable sort yields exactly the stable order, about 2x faster than argsort.
    """
    n = p.shape[1]
    if p.dtype == np.float64:
        p32 = p.astype(np.float32)
        if not np.array_equal(p32, p):
            return np.argsort(-p, axis=1, kind="stable")
        p = p32
    p = p.astype(np.float32, copy=False) + np.float32(0.0)  # -0.0 -> +0.0 so that 0 == -0 ties
    u = p.view(np.uint32)
    sign = np.uint32(0x80000000)
    ascending = np.where(u & sign, ~u, u | sign)  # unsigned order == float order
    keys = (~ascending).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def average_precision(targs: Any, preds: Any) -> np.ndarray:
    """Per-class average precision (fraction in [0, 1]); NaN for classes with no positive.

    AP_c = (1 / P_c) * sum over positives i of hits(g_i) / g_i, where g_i is the 1-based rank of the last
    sample of i's group of equal scores when class c's scores are sorted descending, and hits(g) the number of
    positives ranked <= g. Without ties g_i is i's own rank: the official formula. With ties, a group of equal
    scores counts as one threshold, as in ``sklearn.metrics.average_precision_score``: the order of the samples
    inside it does not matter, and constant scores give the positive rate P_c / N (chance), not a value that
    rewards the order of the rows.
    """
    t, p = _check_pair(targs, preds)
    num_classes, n = t.shape[1], t.shape[0]
    p_t = np.ascontiguousarray(p.T)
    order = _descending_order(p_t)
    t_sorted = np.take_along_axis(np.ascontiguousarray(t.T), order, axis=1)
    cls, pos = np.nonzero(t_sorted)  # row-major: grouped by class, ranks increasing within a class
    npos = np.bincount(cls, minlength=num_classes)
    group_end = _tie_group_ends(np.take_along_axis(p_t, order, axis=1))
    if group_end is None:  # no ties: each positive's hits are its position among the class's positives
        first = np.cumsum(npos) - npos
        end, hits = pos, np.arange(cls.size) - first[cls] + 1
    else:
        end = group_end[cls, pos]
        hits = np.cumsum(t_sorted, axis=1, dtype=np.int64)[cls, end]
    precision_sum = np.bincount(cls, weights=hits / (end + 1.0), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(npos > 0, precision_sum / np.maximum(npos, 1), np.nan)


def _tie_group_ends(sorted_scores: np.ndarray) -> np.ndarray | None:
    """For C x N row-wise sorted scores: the column of the last member of each entry's run of equal scores
    (C x N intp), or None when no row has two equal scores."""
    c, n = sorted_scores.shape
    last = np.ones((c, n), dtype=bool)
    last[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]  # -0.0 == 0.0: they tie
    if last.all():
        return None
    end = np.where(last, np.arange(n), n)
    return np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]


def mAP(targs: Any, preds: Any) -> float:
    """Mean over classes of the average precision, in percent (official signature: targets first).

    Classes without any positive target are left out of the mean with a warning (the official code
    counted them as AP = 0). Raises ValueError when no class has a positive.
    """
    ap = average_precision(targs, preds)
    empty = np.flatnonzero(np.isnan(ap))
    if empty.size == ap.size:
        raise ValueError(f"mAP: none of the {ap.size} classes has a positive target")
    if empty.size:
        shown = empty[:20].tolist()
        more = f" (+{empty.size - 20} more)" if empty.size > 20 else ""
        warnings.warn(
            f"mAP: {empty.size} of {ap.size} classes have no positive target and are left out "
            f"of the mean: class indices {shown}{more}",
            stacklevel=2,
        )
    return float(100.0 * np.nanmean(ap))


# ----------------------------------------------------------------------------- threshold metrics

def _safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den with 0 where den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def threshold_metrics(targs: Any, preds: Any, threshold: float = 0.5) -> dict[str, float]:
    """Per-class (CP, CR, CF1) and overall (OP, OR, OF1) precision/recall/F1 in percent.

    A label is predicted when ``preds > threshold`` (preds are probabilities). Per class c:
    P_c = TP_c / (TP_c + FP_c), R_c = TP_c / (TP_c + FN_c), both 0 when TP_c = 0 (as the official
    validate.py, so a class never predicted, or with no positive, counts as 0). CP, CR = means over
    all C classes; CF1 = 2 CP CR / (CP + CR). OP = sum TP / sum (TP + FP), OR = sum TP / sum (TP + FN),
    OF1 = 2 OP OR / (OP + OR). Any 0/0 is 0.
    """
    t, p = _check_pair(targs, preds)
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(
            f"threshold_metrics: preds must be probabilities in [0, 1] (got range "
            f"[{p.min():.4g}, {p.max():.4g}]); apply a sigmoid to logits first"
        )
    pred = p > threshold
    tp = (pred & t).sum(0)
    fp = (pred & ~t).sum(0)
    fn = (~pred & t).sum(0)
    p_c = np.where(tp > 0, _safe_div(tp, tp + fp), 0.0)
    r_c = np.where(tp > 0, _safe_div(tp, tp + fn), 0.0)
    cp, cr = 100.0 * p_c.mean(), 100.0 * r_c.mean()
    op = 100.0 * _safe_div(tp.sum(), (tp + fp).sum())
    orec = 100.0 * _safe_div(tp.sum(), (tp + fn).sum())
    return {
        "cp": float(cp),
        "cr": float(cr),
        "cf1": float(_safe_div(2 * cp * cr, cp + cr)),
        "op": float(op),
        "or": float(orec),
        "of1": float(_safe_div(2 * op * orec, op + orec)),
    }


def official_f_c(targs: Any, preds: Any, threshold: float = 0.5) -> float:
    """The official validate.py's "F_C", in percent: the mean over all C classes of the per-class F1,
    F1_c = 2 P_c R_c / (P_c + R_c) (0 when TP_c = 0). Not ``threshold_metrics``' CF1 = 2 CP CR / (CP + CR), the
    harmonic mean of the averaged precision and recall; the two differ on the same scores."""
    t, p = _check_pair(targs, preds)
    pred = p > threshold
    tp = (pred & t).sum(0)
    p_c = _safe_div(tp, pred.sum(0))
    r_c = _safe_div(tp, t.sum(0))
    f_c = np.where(tp > 0, _safe_div(2 * p_c * r_c, p_c + r_c), 0.0)
    return float(100.0 * f_c.mean())


# ----------------------------------------------------------------------------- missing labels

def missing_label_counts(full: Any, observed: Any, probs: Any, threshold: float) -> torch.Tensor:
    """[true_pos, predicted_pos, missing_total] (int64, on probs' device, no host sync) for one batch.

    missing = full == 1 and observed == 0 (a true label dropped from the training list);
    unannotated = observed == 0; predicted = probs > threshold.
    true_pos = #(predicted & missing), predicted_pos = #(predicted & unannotated),
    missing_total = #missing. Sum these over batches, then call missing_label_stats_from_counts.
    """
    probs = torch.as_tensor(probs)
    full = torch.as_tensor(full, device=probs.device)
    observed = torch.as_tensor(observed, device=probs.device)
    if not (full.shape == observed.shape == probs.shape) or probs.dim() != 2:
        raise ValueError(
            f"full, observed and probs must be N x C of one shape; got {tuple(full.shape)}, "
            f"{tuple(observed.shape)}, {tuple(probs.shape)}"
        )
    unannotated = observed.float() < 0.5
    missing = (full.float() > 0.5) & unannotated
    predicted = probs > threshold
    return torch.stack([
        (predicted & missing).sum(),
        (predicted & unannotated).sum(),
        missing.sum(),
    ]).to(torch.int64)


def missing_label_stats_from_counts(counts: Any) -> dict[str, float]:
    """Precision and recall (percent) of predictions on missing labels from summed counts.

    missing_recall = true_pos / missing_total; missing_precision = true_pos / predicted_pos;
    each is NaN when its denominator is 0. missing_count = missing_total.
    """
    values = torch.as_tensor(counts).reshape(-1).tolist()
    if len(values) != 3:
        raise ValueError(f"counts must be [true_pos, predicted_pos, missing_total]; got {values}")
    tp, pp, total = (int(v) for v in values)
    return {
        "missing_precision": 100.0 * tp / pp if pp > 0 else float("nan"),
        "missing_recall": 100.0 * tp / total if total > 0 else float("nan"),
        "missing_count": total,
    }


def missing_label_stats(full: Any, observed: Any, probs: Any, threshold: float) -> dict[str, float]:
    """missing_label_stats_from_counts(missing_label_counts(...)) for a whole N x C set at once."""
    return missing_label_stats_from_counts(missing_label_counts(full, observed, probs, threshold))


# ----------------------------------------------------------------------------- missing labels, threshold-free

def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` in ascending order, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first position of each run of equal values
    ends = np.r_[starts[1:], xs.size]  # one past the last
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _scores_and_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(_to_numpy(scores, "scores"), dtype=np.float64).reshape(-1)
    y = _to_numpy(labels, "labels").reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same size; got {s.size} and {y.size}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} NaN/inf values")
    if y.dtype != np.bool_:
        if not ((y == 0) | (y == 1)).all():
            raise ValueError("labels must be binary (0/1)")
        y = y.astype(bool)
    return s, y


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (a fraction in [0, 1]) of binary ``labels`` ranked by ``scores``; NaN when
    either class is empty.

    Mann-Whitney form: AUC = (R_pos - P (P + 1) / 2) / (P N), where R_pos is the sum of the 1-based ascending
    ranks of the P positives among all P + N entries and tied scores share their average rank, so that a tied
    positive-negative pair counts 1/2 (as ``sklearn.metrics.roc_auc_score``).
    """
    s, y = _scores_and_labels(scores, labels)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    rank_sum = _average_ranks(s)[y].sum()
    return float((rank_sum - pos * (pos + 1) / 2.0) / (pos * neg))


def top_k_precision(scores: Any, labels: Any, k: int) -> float:
    """Share of positives (a fraction) among the ``k`` highest ``scores``; NaN when k = 0.

    Ties at the cut count in expectation over their order: with a entries (p of them positive) scored above the
    k-th highest score s_k and t entries (q positive) scored exactly s_k, precision = (p + (k - a) q / t) / k.
    """
    s, y = _scores_and_labels(scores, labels)
    if not 0 <= k <= s.size:
        raise ValueError(f"k must lie in [0, {s.size}], got {k}")
    if k == 0:
        return float("nan")
    kth = np.partition(s, s.size - k)[s.size - k]
    above, tied = s > kth, s == kth
    hits = y[above].sum() + (k - above.sum()) * y[tied].sum() / tied.sum()
    return float(hits / k)


def missing_label_ranking(full: Any, observed: Any, probs: Any) -> dict[str, float]:
    """How well ``probs`` rank the missing labels above the true negatives, without a threshold (percent).

    Among the unobserved entries (observed == 0) of the N x C arrays, the missing positives have full == 1
    and the true negatives full == 0. missing_auroc = 100 * roc_auc of the two groups by score;
    missing_topk_precision = 100 * top_k_precision with k = the number of missing positives (the R-precision:
    with k so chosen, precision and recall at k are equal). Both NaN when there is no missing positive (the
    AUROC also when there is no true negative).
    """
    f, o, p = (_to_numpy(x, n) for x, n in ((full, "full"), (observed, "observed"), (probs, "probs")))
    if not (f.shape == o.shape == p.shape) or p.ndim != 2:
        raise ValueError(f"full, observed and probs must be N x C of one shape; got {f.shape}, {o.shape}, {p.shape}")
    unobserved = o < 0.5
    labels, scores = f[unobserved] > 0.5, p[unobserved]
    return {"missing_auroc": 100.0 * roc_auc(scores, labels),
            "missing_topk_precision": 100.0 * top_k_precision(scores, labels, int(labels.sum()))}
