"""Classifier two-sample test: gradient-boosted trees on high-level features, isotonic-calibrated, AUC per seed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from caloquant._optional import require
from caloquant.errors import InputError

#: Train / calibration / test shares of each class (CaloChallenge uses 60/20/20 as well).
SPLIT = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class ClassifierResult:
    """Mean AUC over seeds, its error (max of seed spread and the Hanley-McNeil error) and per-seed values."""

    auc: float
    error: float
    per_seed: tuple[float, ...]
    jsd: float


def hanley_mcneil_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC estimated from n_pos positives and n_neg negatives (Hanley & McNeil 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def classifier_auc(
    reference: np.ndarray, candidate: np.ndarray, *, seeds: Sequence[int] = (0, 1, 2), max_iter: int = 200
) -> ClassifierResult:
    """AUC of a HistGradientBoostingClassifier telling candidate (0) from reference (1) showers.

    Per seed: balanced classes, 60/20/20 split, isotonic calibration on the middle part, AUC on the last.
    0.5 means indistinguishable; JSD = (ln 2 - BCE) / ln 2 of the calibrated test predictions is kept too.
    """
    HistGradientBoostingClassifier = require("sklearn.ensemble").HistGradientBoostingClassifier
    IsotonicRegression = require("sklearn.isotonic").IsotonicRegression
    log_loss, roc_auc_score = require("sklearn.metrics").log_loss, require("sklearn.metrics").roc_auc_score
    n = min(len(reference), len(candidate))
    if n < 10:
        raise InputError(f"the classifier test needs at least 10 showers per sample, got {n}")
    aucs, jsds, n_test = [], [], 0
    for seed in seeds:
        rng = np.random.default_rng(seed)
        parts = []
        for x in (candidate, reference):
            idx = rng.permutation(len(x))[:n]
            cut = np.cumsum([int(SPLIT[0] * n), int(SPLIT[1] * n)])
            parts.append(np.split(x[idx], cut))
        xs = [np.concatenate([parts[0][k], parts[1][k]]) for k in range(3)]
        ys = [np.concatenate([np.zeros(len(parts[0][k])), np.ones(len(parts[1][k]))]) for k in range(3)]
        clf = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=True, validation_fraction=0.15,
                                             random_state=seed)
        clf.fit(xs[0], ys[0])
        iso = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, out_of_bounds="clip")
        iso.fit(clf.predict_proba(xs[1])[:, 1], ys[1])
        p = iso.predict(clf.predict_proba(xs[2])[:, 1])
        aucs.append(float(roc_auc_score(ys[2], p)))
        jsds.append(float((np.log(2) - log_loss(ys[2], np.clip(p, 1e-6, 1 - 1e-6))) / np.log(2)))
        n_test = len(parts[0][2])
    auc = float(np.mean(aucs))
    spread = float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0
    return ClassifierResult(auc, max(spread, hanley_mcneil_error(auc, n_test, n_test)), tuple(aucs),
                            float(np.mean(jsds)))
