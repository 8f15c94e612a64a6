"""Probes fitted on one feature set: a linear classifier and k-NN (plus ridge / k-NN regression).

Features are standardised on the training pixels first (scikit-learn ``StandardScaler``), so raw DN
medians and embeddings get the same treatment. The linear probe is a multinomial logistic regression
(L-BFGS, deterministic); k-NN votes among the ``k`` nearest training pixels in the standardised space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PROBES", "ClassMetrics", "class_metrics", "fit_predict", "regression_metrics"]

PROBES = ("linear", "knn")
"""Classifier probes, in report order."""


def _classifier(probe: str, k: int, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if probe == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))


def _regressor(probe: str, k: int) -> Any:
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = Ridge(alpha=1.0) if probe == "linear" else KNeighborsRegressor(n_neighbors=k)
    return make_pipeline(StandardScaler(), model)


def fit_predict(
    features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, probe: str, *, k: int = 5,
    seed: int = 0, regression: bool = False,
) -> np.ndarray:  # fmt: skip
    """Fit ``probe`` on the ``train`` rows and predict the ``test`` rows."""
    model = _regressor(probe, k) if regression else _classifier(probe, min(k, int(train.sum())), seed)
    model.fit(features[train], y[train])
    return np.asarray(model.predict(features[test]))


@dataclass(frozen=True)
class ClassMetrics:
    """Scores of one classifier on the test pixels."""

    accuracy: float
    """Share of test pixels classified correctly."""
    macro_f1: float
    """Mean per-class F1 over the classes present in the test set."""
    per_class_f1: dict[int, float]
    """F1 of each class present in the test set."""
    group_macro_f1: dict[str, float]
    """Mean F1 over the classes of each group (those present in the test set)."""
    confusion: list[list[int]]
    """Counts, rows = true class, columns = predicted class, both in ``labels`` order."""
    labels: list[int]
    """Class codes of the confusion matrix's rows and columns."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (class codes as strings)."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class_f1": {str(c): f for c, f in self.per_class_f1.items()},
            "group_macro_f1": dict(self.group_macro_f1),
            "confusion_labels": self.labels,
            "confusion": self.confusion,
        }


def class_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int], groups: Mapping[str, Sequence[int]]
) -> ClassMetrics:
    """Accuracy, macro and per-class F1, group macro F1 and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    present = [c for c in labels if (y_true == c).any()]
    f1 = f1_score(y_true, y_pred, labels=present, average=None, zero_division=0.0)
    per_class = {int(c): float(v) for c, v in zip(present, f1, strict=True)}
    group_f1 = {
        name: float(np.mean([per_class[c] for c in members if c in per_class]))
        for name, members in groups.items()
        if any(c in per_class for c in members)
    }
    return ClassMetrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(np.mean(list(per_class.values()))),
        per_class_f1=per_class,
        group_macro_f1=group_f1,
        confusion=confusion_matrix(y_true, y_pred, labels=list(labels)).tolist(),
        labels=[int(c) for c in labels],
    )


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² and RMSE of a regression probe."""
    from sklearn.metrics import r2_score

    return {
        "r2": float(r2_score(y_true, y_pred)),
        "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2))),
    }
