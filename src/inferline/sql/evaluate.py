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

import logging
import math
import re
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

from inferline.errors import SqlError
from inferline.report.metrics import Confusion, class_name
from inferline.sql.names import ml_calls

MARKER = "__inferline_evaluate"
THRESHOLDS = "__inferline_thresholds"  # ML.ROC_CURVE's third argument, inside the marker
# EXPLAIN_PREDICT/DETECT_ANOMALIES ride the same marker (sql/model_info.py).
FUNCTIONS = ("EVALUATE", "CONFUSION_MATRIX", "ROC_CURVE", "EXPLAIN_PREDICT", "DETECT_ANOMALIES")
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
EVALUATION_PREFIX = "inferline_evaluation__"
METRICS_PREFIX = "inferline_metrics__"
PROBABILITY_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; decision scores miss by far
log = logging.getLogger("inferline.sql")
TRUTH = "__inferline_label"  # the label column's name inside the translation


def mark(text: str) -> str:
    """Each `ML.EVALUATE(MODEL m, input)` -> `ML.PREDICT(MODEL m, input, STRUCT('EVALUATE' AS
    marker))`, and likewise ML.CONFUSION_MATRIX."""
    tokens = list(sqlglot.tokenize(text, read="bigquery"))
    edits: list[tuple[int, int, str]] = []
    for function, i, end, comma_indexes in ml_calls(tokens, FUNCTIONS):
        name, close, commas = tokens[i + 2], tokens[end], len(comma_indexes)
        options = commas == 2 and function != "ROC_CURVE" and _ends_with_struct(tokens, i + 3, close)
        listed = commas == 2 and function == "ROC_CURVE" and _ends_with_thresholds(tokens, i + 3, close)
        default = commas == 0 and function == "EVALUATE" and tokens[i + 4].text.upper() == "MODEL"
        if default:  # no input: the evaluation rows CREATE MODEL ... AS SELECT kept (sql/training/)
            model = text[tokens[i + 4].end + 1 : close.start].strip().replace("`", "")
            table = evaluation_table(".".join(model.split(".")[-2:]))
            edits.append((name.start, name.end + 1, "PREDICT"))
            edits.append((close.start, close.start, f", TABLE {table}, STRUCT('{function}' AS {MARKER})"))
            continue
        if commas != 1 and not options and not listed:
            raise SqlError(
                f"ML.{function} takes MODEL name and one input, (SELECT ...) or TABLE name"
                + (
                    ", and optionally STRUCT(0.5 AS threshold)"
                    if function != "ROC_CURVE"
                    else ", and optionally thresholds, GENERATE_ARRAY(0.4, 0.6, 0.01) or [0.4, 0.5]"
                )
            )
        edits.append((name.start, name.end + 1, "PREDICT"))
        if listed:  # the thresholds travel in the marker STRUCT
            comma = _last_comma(tokens, i + 3, close) or 0
            given = text[tokens[comma + 1].start : close.start]
            marker = f", STRUCT('{function}' AS {MARKER}, {given} AS {THRESHOLDS})"
            edits.append((tokens[comma].start, close.start, marker))
        elif options:  # the marker joins the STRUCT(...) the call already has
            end = _closing_paren_before(tokens, close)
            edits.append((end.start, end.start, f", '{function}' AS {MARKER}"))
        else:
            edits.append((close.start, close.start, f", STRUCT('{function}' AS {MARKER})"))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def evaluation_table(model: str) -> str:
    """The DuckDB table holding a trained model's evaluation rows (ML.EVALUATE without input)."""
    return EVALUATION_PREFIX + re.sub(r"[^a-z0-9_]", "_", model.lower().replace(".", "__"))


def metrics_table(model: str) -> str:
    """The DuckDB table holding ML.EVALUATE's row of a trained model with a label, worked out
    at training (ML.EVALUATE without input reads it instead of the evaluation rows)."""
    return METRICS_PREFIX + evaluation_table(model).removeprefix(EVALUATION_PREFIX)


def _ends_with_struct(tokens: list[Any], start: int, close: Any) -> bool:
    # The third argument of ML.EVALUATE(MODEL m, input, STRUCT(...)) is a STRUCT literal.
    comma = _last_comma(tokens, start, close)
    return comma is not None and tokens[comma + 1].text.upper() == "STRUCT"


def _ends_with_thresholds(tokens: list[Any], start: int, close: Any) -> bool:
    # ML.ROC_CURVE(MODEL m, input, GENERATE_ARRAY(0.4, 0.6, 0.01)) or an array literal.
    comma = _last_comma(tokens, start, close)
    after = tokens[comma + 1] if comma is not None else None
    return after is not None and (
        after.text.upper() in ("GENERATE_ARRAY", "ARRAY") or after.token_type == TokenType.L_BRACKET
    )


def _last_comma(tokens: list[Any], start: int, close: Any) -> int | None:
    """The index in `tokens` of the call's last top-level comma (the call's `(` is `start`)."""
    depth, last = 0, None
    for k in range(start, len(tokens)):
        token = tokens[k]
        if token.start >= close.start:
            break
        if token.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
        elif token.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth -= 1
        elif token.token_type == TokenType.COMMA and depth == 1:
            last = k
    return last


def _closing_paren_before(tokens: list[Any], close: Any) -> Any:
    before = [t for t in tokens if t.end < close.start and t.token_type == TokenType.R_PAREN]
    return before[-1]


def roc_thresholds(node: exp.Expr, where: str) -> list[float] | None:
    """ML.ROC_CURVE's thresholds (its third argument), taken out of the marker STRUCT; None when
    not given. `GENERATE_ARRAY(start, end, step)` counts in decimal, as BigQuery: 0.4 .. 0.6 by
    0.01 gives 21 thresholds."""
    params = node.args.get("params_struct")
    if not isinstance(params, exp.Struct):
        return None
    for item in params.expressions:
        if isinstance(item, exp.PropertyEQ) and item.this.name == THRESHOLDS:
            params.set("expressions", [e for e in params.expressions if e is not item])
            return _threshold_list(item.expression, where)
    return None


def _threshold_list(node: exp.Expr, where: str) -> list[float]:
    shown = node.sql("bigquery")
    if isinstance(node, exp.GenerateSeries):
        parts = [node.args.get(k) for k in ("start", "end", "step")]
        start, end, step = (_decimal(p, where, shown) for p in parts)
        if step <= 0:
            raise SqlError(f"{where}: GENERATE_ARRAY's step must be positive, got {shown}")
        count = int((end - start) / step) + 1 if end >= start else 0
        values = [float(start + i * step) for i in range(count)]
    elif isinstance(node, exp.Array):
        values = [float(_decimal(e, where, shown)) for e in node.expressions]
    else:
        raise SqlError(
            f"{where}: thresholds must be GENERATE_ARRAY(start, end, step) or [numbers], got {shown}"
        )
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise SqlError(f"{where}: thresholds must be numbers between 0 and 1, got {shown}")
    return values


def _decimal(node: exp.Expr | None, where: str, shown: str) -> Decimal:
    negative = isinstance(node, exp.Neg)
    literal = node.this if isinstance(node, exp.Neg) else node
    if not isinstance(literal, exp.Literal) or literal.is_string:
        raise SqlError(f"{where}: thresholds must be number literals, got {shown}")
    value = Decimal(str(literal.this))
    return -value if negative else value


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
    thresholds: list[float] | None = None,
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
        # A trained classifier's predicted_<label>_probs rows are lists of {label, prob}.
        rows = [[p["prob"] for p in r] if r and isinstance(r[0], dict) else r for r in rows]
        scores = np.asarray([rows[i] for i in keep], dtype=np.float64)
    if function == "ROC_CURVE":
        if scores is None:
            raise SqlError(f"{where}: an ROC curve needs a classifier that gives probabilities")
        return roc_rows(truth, scores, classes, where=where, thresholds=thresholds)
    if function == "CONFUSION_MATRIX":
        if not classifier:
            raise SqlError(f"{where}: a confusion matrix needs a classifier (a model with classes)")
        return confusion_rows(truth, predicted)
    if scores is not None and not are_probabilities(scores):
        log.warning(
            "warning: %s: log_loss and roc_auc are NULL: the model's %s are not probabilities "
            "(rows must be in [0, 1] and sum to 1; an SVC without probability=True gives "
            "decision scores)",
            where,
            outputs[1],
        )
        scores = None
    if not classifier:
        try:
            actual = np.asarray(truth, dtype=np.float64)
            return result_row(regression_metrics(actual, np.asarray(predicted, dtype=np.float64)))
        except (TypeError, ValueError):
            raise SqlError(f"{where}: the label column must hold numbers for a regression model") from None
    return result_row(classification_metrics(truth, predicted, scores, classes))


def are_probabilities(scores: np.ndarray) -> bool:
    """Whether each row of `scores` is a probability distribution over the classes."""
    if scores.ndim != 2 or scores.size == 0 or not np.isfinite(scores).all():
        return False
    within = bool(((scores >= -PROBABILITY_TOLERANCE) & (scores <= 1 + PROBABILITY_TOLERANCE)).all())
    return within and bool(np.allclose(scores.sum(axis=1), 1.0, atol=PROBABILITY_TOLERANCE))


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


def roc_rows(
    truth: list[Any],
    scores: np.ndarray,
    classes: list[Any] | None,
    *,
    where: str,
    thresholds: list[float] | None = None,
) -> str:
    """BigQuery's ML.ROC_CURVE rows for a binary classifier, as a DuckDB subquery: at the given
    `thresholds`, else at up to 101 quantiles of the positive class's probability."""
    if scores.ndim != 2 or scores.shape[1] != 2:
        width = scores.shape[1] if scores.ndim == 2 else 1
        raise SqlError(f"{where}: an ROC curve needs a binary classifier; this model gives {width} classes")
    order = classes if classes is not None else [0, 1]
    positive_name = class_name(order[1])
    positive = np.asarray([class_name(t) == positive_name for t in truth])
    score = scores[:, 1]
    if thresholds is None:
        thresholds = list(np.unique(np.quantile(score, np.linspace(0.0, 1.0, 101)))[::-1])
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
    columns = None
    if scores is not None and scores.ndim == 2:
        order = classes if classes is not None else list(range(scores.shape[1]))
        index = {class_name(c): i for i, c in enumerate(order)}
        found = [index.get(class_name(t)) for t in truth]
        if all(c is not None for c in found):
            columns = np.asarray(found, dtype=np.int64)
    return counted_metrics(counts, columns, scores, classes)


def counted_metrics(
    counts: dict[tuple[object, object], int],
    columns: np.ndarray | None,
    scores: np.ndarray | None,
    classes: list[Any] | None,
) -> dict[str, float | None]:
    """ML.EVALUATE's classifier metrics from the {(truth, predicted): rows} counts and, for
    log_loss and roc_auc, each row's true class as a column of `scores` (None: unmatched)."""
    confusion = Confusion.from_pairs(counts)
    precision, recall, f1 = confusion.macro()
    positive = positive_class(confusion.labels, classes, scores)
    if positive is not None:  # BigQuery: a binary classifier's scores are its positive class's
        scored = [(c.precision, c.recall, c.f1) for c in confusion.per_class() if c.name == positive]
        precision, recall, f1 = scored[0] if scored else (0.0, 0.0, 0.0)
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
    if len(order) != scores.shape[1] or columns is None:
        return metrics  # the scores' columns cannot be matched to the labels
    chosen = scores[np.arange(len(columns)), columns]
    metrics["log_loss"] = float(-np.mean(np.log(np.clip(chosen, 1e-15, 1.0))))
    classes_scored = range(1, 2) if scores.shape[1] == 2 else range(scores.shape[1])
    # Binary: the second class's AUC (the first's ranks the same rows the other way round).
    aucs = [_auc(columns == k, scores[:, k]) for k in classes_scored]
    present = [a for a in aucs if a is not None]
    metrics["roc_auc"] = float(np.mean(present)) if present else None
    return metrics


def positive_class(labels: list[str], classes: list[Any] | None, scores: np.ndarray | None) -> str | None:
    """A binary classifier's positive class (its second; the larger of two labels when the model
    does not list its classes), or None for more than two classes."""
    if classes is not None:
        return class_name(classes[1]) if len(classes) == 2 else None
    if scores is not None and scores.ndim == 2 and scores.shape[1] != 2:
        return None
    return labels[1] if len(labels) == 2 else None


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
    order = np.argsort(score)  # tied scores share their average rank: any sort order will do
    ordered = score[order]
    starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    first = np.flatnonzero(starts)
    sizes = np.diff(np.append(first, len(score)))
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = (first + (sizes + 1) / 2.0)[np.cumsum(starts) - 1]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
