"""`ML.EVALUATE`, `ML.CONFUSION_MATRIX` and `ML.ROC_CURVE(MODEL m, (SELECT ...))`: BigQuery ML's
evaluation of an imported model.

The input holds the features and the true value in the column named by the model's
`input_label_cols` option (`CREATE MODEL ... OPTIONS(input_label_cols=['species'])`), else
`label`. The model predicts the rows as ML.PREDICT would (the label column is not an input),
and ML.EVALUATE gives one row of BigQuery's metrics:

- classifiers (the model has classes or scores): `precision`, `recall`, `f1_score` (macro
  averages over the classes that occur as truth), `accuracy`, `log_loss` and `roc_auc`
  (one-vs-rest, macro; NULL when the model gives no probabilities);
- regressors: `mean_absolute_error`, `mean_squared_error`, `mean_squared_log_error` (NULL with
  negative values), `median_absolute_error`, `r2_score`, `explained_variance`.

ML.CONFUSION_MATRIX gives BigQuery's confusion matrix: `expected_label`, then one count column
per class (named by the label; `_0`, `_1`, ... for numbers), one row per true class.
ML.ROC_CURVE, for a binary classifier with probabilities, gives BigQuery's columns `threshold,
recall, false_positive_rate, true_positives, false_positives, true_negatives, false_negatives`
at up to 101 thresholds (quantiles of the positive class's probability; the positive class is
the model's second class).

sqlglot parses neither, so `mark()` rewrites each call to ML.PREDICT with a marker STRUCT as its
options argument; the translation spots the marker and evaluates instead.

Example:
    >>> mark("SELECT * FROM ML.EVALUATE(MODEL ds.iris, TABLE flowers)")
    "SELECT * FROM ML.PREDICT(MODEL ds.iris, TABLE flowers, STRUCT('EVALUATE' AS __inferline_evaluate))"
"""

from __future__ import annotations

import math
import re
from typing import Any

import duckdb
import numpy as np
import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

from inferline.errors import SqlError
from inferline.report.metrics import Confusion, class_name

MARKER = "__inferline_evaluate"
FUNCTIONS = ("EVALUATE", "CONFUSION_MATRIX", "ROC_CURVE")
ROC_COLUMNS = (
    "threshold",
    "recall",
    "false_positive_rate",
    "true_positives",
    "false_positives",
    "true_negatives",
    "false_negatives",
)
DEFAULT_LABEL = "label"
TRUTH = "__inferline_label"  # the label column's name inside the translation


def mark(text: str) -> str:
    """Each `ML.EVALUATE(MODEL m, input)` -> `ML.PREDICT(MODEL m, input, STRUCT('EVALUATE' AS
    marker))`, and likewise ML.CONFUSION_MATRIX."""
    tokens = list(sqlglot.tokenize(text, read="bigquery"))
    edits: list[tuple[int, int, str]] = []
    for i in range(len(tokens) - 3):
        ml, dot, name, paren = tokens[i : i + 4]
        if not (
            ml.text.upper() == "ML"
            and dot.token_type == TokenType.DOT
            and name.text.upper() in FUNCTIONS
            and paren.token_type == TokenType.L_PAREN
        ):
            continue
        depth, commas, close = 0, 0, None
        for token in tokens[i + 3 :]:
            if token.token_type == TokenType.L_PAREN:
                depth += 1
            elif token.token_type == TokenType.R_PAREN:
                depth -= 1
                if depth == 0:
                    close = token
                    break
            elif token.token_type == TokenType.COMMA and depth == 1:
                commas += 1
        function = name.text.upper()
        if close is None:
            raise SqlError(f"ML.{function}: missing closing parenthesis")
        options = commas == 2 and function != "ROC_CURVE" and _ends_with_struct(tokens, i + 3, close)
        if commas != 1 and not options:
            raise SqlError(
                f"ML.{function} takes MODEL name and one input, (SELECT ...) or TABLE name"
                + (", and optionally STRUCT(0.5 AS threshold)" if function != "ROC_CURVE" else "")
            )
        edits.append((name.start, name.end + 1, "PREDICT"))
        if options:  # the marker joins the STRUCT(...) the call already has
            end = _closing_paren_before(tokens, close)
            edits.append((end.start, end.start, f", '{function}' AS {MARKER}"))
        else:
            edits.append((close.start, close.start, f", STRUCT('{function}' AS {MARKER})"))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _ends_with_struct(tokens: list[Any], start: int, close: Any) -> bool:
    # The third argument of ML.EVALUATE(MODEL m, input, STRUCT(...)) is a STRUCT literal.
    inside = [t for t in tokens[start:] if t.start < close.start]
    last_comma = max(
        (k for k, t in enumerate(inside) if t.token_type == TokenType.COMMA and _depth(inside, k) == 1),
        default=None,
    )
    return last_comma is not None and inside[last_comma + 1].text.upper() == "STRUCT"


def _depth(tokens: list[Any], index: int) -> int:
    depth = 0
    for token in tokens[:index]:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
    return depth


def _closing_paren_before(tokens: list[Any], close: Any) -> Any:
    before = [t for t in tokens if t.end < close.start and t.token_type == TokenType.R_PAREN]
    return before[-1]


def marked(node: exp.Expr) -> str | None:
    """The function (EVALUATE, CONFUSION_MATRIX, ROC_CURVE) an ML.PREDICT node came from,
    dropping the marker (other options such as a threshold stay); None for a real ML.PREDICT."""
    params = node.args.get("params_struct")
    if not isinstance(params, exp.Struct):
        return None
    for item in params.expressions:
        if isinstance(item, exp.PropertyEQ) and item.this.name == MARKER:
            rest = [e for e in params.expressions if e is not item]
            node.set("params_struct", exp.Struct(expressions=rest) if rest else None)
            return str(item.expression.this)
    return None


def evaluate(
    con: duckdb.DuckDBPyConnection,
    predicted_sql: str,
    label: str,
    outputs: list[str],
    classes: list[Any] | None,
    *,
    function: str,
    classifier: bool,
    where: str,
) -> str:
    """Run the ML.PREDICT subquery; the one-row metrics (EVALUATE) or the confusion matrix
    (CONFUSION_MATRIX) over its rows, as a DuckDB subquery."""
    quoted = ", ".join(_identifier(c) for c in [label, *outputs])
    try:
        table = con.sql(f"SELECT {quoted} FROM {predicted_sql}").to_arrow_table()
    except duckdb.Error as exc:
        raise SqlError(f"{where}: {str(exc).splitlines()[0]}") from None
    truth = table.column(label).to_pylist()
    predicted = table.column(outputs[0]).to_pylist()
    keep = [
        i for i, (t, p) in enumerate(zip(truth, predicted, strict=True)) if t is not None and p is not None
    ]
    if not keep:
        raise SqlError(f"{where}: no rows with both a true value and a prediction to evaluate")
    truth = [truth[i] for i in keep]
    predicted = [predicted[i] for i in keep]
    scores: np.ndarray | None = None
    if classifier and len(outputs) > 1:
        rows = table.column(outputs[1]).to_pylist()
        scores = np.asarray([rows[i] for i in keep], dtype=np.float64)
    if function == "ROC_CURVE":
        if scores is None:
            raise SqlError(f"{where}: an ROC curve needs a classifier that gives probabilities")
        return roc_rows(truth, scores, classes, where=where)
    if function == "CONFUSION_MATRIX":
        if not classifier:
            raise SqlError(f"{where}: a confusion matrix needs a classifier (a model with classes)")
        return confusion_rows(truth, predicted)
    if not classifier:
        try:
            actual = np.asarray(truth, dtype=np.float64)
            return result_row(regression_metrics(actual, np.asarray(predicted, dtype=np.float64)))
        except (TypeError, ValueError):
            raise SqlError(f"{where}: the label column must hold numbers for a regression model") from None
    return result_row(classification_metrics(truth, predicted, scores, classes))


def confusion_rows(truth: list[Any], predicted: list[Any]) -> str:
    """BigQuery's ML.CONFUSION_MATRIX as a DuckDB subquery: expected_label, one column per class."""
    counts: dict[tuple[object, object], int] = {}
    for pair in zip(truth, predicted, strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    confusion = Confusion.from_pairs(counts)
    numeric = all(_is_int(label) for label in confusion.labels)
    names = [_column_name(label) for label in confusion.labels]
    rows = []
    for i, label in enumerate(confusion.labels):
        expected = label if numeric else "'" + label.replace("'", "''") + "'"
        rows.append("(" + ", ".join([expected, *(str(int(n)) for n in confusion.matrix[i])]) + ")")
    columns = ", ".join(_identifier(c) for c in ["expected_label", *names])
    return f"(SELECT * FROM (VALUES {', '.join(rows)}) AS __inferline_confusion({columns}))"


def roc_rows(truth: list[Any], scores: np.ndarray, classes: list[Any] | None, *, where: str) -> str:
    """BigQuery's ML.ROC_CURVE rows for a binary classifier, as a DuckDB subquery."""
    if scores.ndim != 2 or scores.shape[1] != 2:
        width = scores.shape[1] if scores.ndim == 2 else 1
        raise SqlError(f"{where}: an ROC curve needs a binary classifier; this model gives {width} classes")
    order = classes if classes is not None else [0, 1]
    positive_class = class_name(order[1])
    positive = np.asarray([class_name(t) == positive_class for t in truth])
    score = scores[:, 1]
    thresholds = np.unique(np.quantile(score, np.linspace(0.0, 1.0, 101)))[::-1]
    rows = []
    for threshold in thresholds:
        called = score >= threshold
        tp = int(np.sum(called & positive))
        fp = int(np.sum(called & ~positive))
        tn = int(np.sum(~called & ~positive))
        fn = int(np.sum(~called & positive))
        recall = tp / (tp + fn) if tp + fn else 0.0
        fpr = fp / (fp + tn) if fp + tn else 0.0
        rows.append(f"({_double(threshold)}, {_double(recall)}, {_double(fpr)}, {tp}, {fp}, {tn}, {fn})")
    columns = ", ".join(ROC_COLUMNS)
    return f"(SELECT * FROM (VALUES {', '.join(rows)}) AS __inferline_roc({columns}))"


def _double(value: float) -> str:
    # Exponent notation: DuckDB reads it as a DOUBLE (a plain decimal literal is a DECIMAL).
    return f"{float(value):.17e}"


def _is_int(label: str) -> bool:
    return label.lstrip("-").isdigit()


def _column_name(label: str) -> str:
    # BigQuery: invalid characters become `_`, and a leading digit gets a `_` prefix.
    name = re.sub(r"[^A-Za-z0-9_]", "_", label)
    return f"_{name}" if not name or name[0].isdigit() else name


def classification_metrics(
    truth: list[Any], predicted: list[Any], scores: np.ndarray | None, classes: list[Any] | None
) -> dict[str, float | None]:
    counts: dict[tuple[object, object], int] = {}
    for pair in zip(truth, predicted, strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    confusion = Confusion.from_pairs(counts)
    precision, recall, f1 = confusion.macro()
    metrics: dict[str, float | None] = {
        "precision": precision,
        "recall": recall,
        "accuracy": confusion.accuracy,
        "f1_score": f1,
        "log_loss": None,
        "roc_auc": None,
    }
    if scores is None or scores.ndim != 2:
        return metrics
    order = classes if classes is not None else list(range(scores.shape[1]))
    index = {class_name(c): i for i, c in enumerate(order)}
    columns = [index.get(class_name(t)) for t in truth]
    if len(order) != scores.shape[1] or any(c is None for c in columns):
        return metrics  # the scores' columns cannot be matched to the labels
    rows = np.arange(len(truth))
    chosen = scores[rows, np.asarray(columns, dtype=np.int64)]
    metrics["log_loss"] = float(-np.mean(np.log(np.clip(chosen, 1e-15, 1.0))))
    aucs = [_auc(np.asarray(columns) == k, scores[:, k]) for k in range(scores.shape[1])]
    present = [a for a in aucs if a is not None]
    metrics["roc_auc"] = float(np.mean(present)) if present else None
    return metrics


def regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    error = truth - predicted
    variance = float(np.var(truth))
    log_error = None
    if (truth >= 0).all() and (predicted >= 0).all():
        log_error = float(np.mean((np.log1p(truth) - np.log1p(predicted)) ** 2))
    return {
        "mean_absolute_error": float(np.mean(np.abs(error))),
        "mean_squared_error": float(np.mean(error**2)),
        "mean_squared_log_error": log_error,
        "median_absolute_error": float(np.median(np.abs(error))),
        "r2_score": 1.0 - float(np.mean(error**2)) / variance if variance else None,
        "explained_variance": 1.0 - float(np.var(error)) / variance if variance else None,
    }


def result_row(metrics: dict[str, float | None]) -> str:
    """One-row DuckDB subquery holding the metrics as DOUBLE columns."""
    values = ", ".join(
        f"{'NULL' if v is None or not math.isfinite(v) else _double(v)}::DOUBLE AS {_identifier(k)}"
        for k, v in metrics.items()
    )
    return f"(SELECT {values})"


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    # Mann-Whitney U with average ranks for ties.
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ordered = score[order]
    starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    first = np.flatnonzero(starts)
    sizes = np.diff(np.append(first, len(score)))
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = (first + (sizes + 1) / 2.0)[np.cumsum(starts) - 1]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
