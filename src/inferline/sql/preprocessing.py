"""BigQuery ML's manual preprocessing functions, as DuckDB window aggregates and macros.

`ML.STANDARD_SCALER(x) OVER (PARTITION BY g)` becomes
`__ml_standard_scaler(x, avg(x) OVER (PARTITION BY g), stddev_samp(x) OVER (PARTITION BY g))`:
the statistic (the "fit") is a DuckDB window aggregate over the same window, the rest a TEMP
MACRO applied to it (vectorised in DuckDB; no Python per row, except HASH_BUCKETIZE's farmhash).
Without OVER the whole input is the window, as OVER () (BigQuery's TRANSFORM form).

Each analytic function is a `Recipe`: its aggregates (the fitted statistics) and the macro
that applies them. `fit_sql()` gives the aggregates as a plain SELECT list and `apply_sql()`
applies given values, so training (CREATE MODEL ... TRANSFORM) can fit on one table and apply
the same statistics to another:

    >>> recipe = recipe_for("STANDARD_SCALER", ["x"])
    >>> recipe.fit_sql()
    'avg(x) AS mean, stddev_samp(x) AS stddev'
    >>> recipe.apply_sql({"mean": "3.0", "stddev": "1.5"})
    '__ml_standard_scaler(x, 3.0, 1.5)'

Semantics follow Google's reference pages, checked against scikit-learn in the tests:
STANDARD_SCALER uses the sample standard deviation (Google's example: 1..5 -> +-1.2649...);
ROBUST_SCALER, QUANTILE_BUCKETIZE and IMPUTER's median use exact linear quantiles
(BigQuery's approximate ones agree on small data); vocabularies (LABEL/ONE_HOT/MULTI_HOT
encoders, BAG_OF_WORDS, TF_IDF) keep categories seen at least `frequency_threshold` times
(default 5; in as many rows for the array functions), the `top_k` most frequent (default
32,000; ties alphabetical), sorted alphabetically from index 1; 0 is NULL or unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from inferline.errors import SqlError

TOP_K, THRESHOLD = "32000", "5"

# Macros: the "apply" half of each function (and the helpers they share).
MACROS = r"""
CREATE OR REPLACE TEMP MACRO __ml_standard_scaler(x, mean, stddev) AS (x - mean) / stddev;
CREATE OR REPLACE TEMP MACRO __ml_min_max_scaler(x, lo, hi) AS
  greatest(0.0, least(1.0, (x - lo) / (hi - lo)));
CREATE OR REPLACE TEMP MACRO __ml_max_abs_scaler(x, top) AS x / top;
CREATE OR REPLACE TEMP MACRO __ml_robust_scaler(x, q, with_median, with_range) AS
  (x - CASE WHEN with_median THEN q[2] ELSE 0 END) / CASE WHEN with_range THEN q[3] - q[1] ELSE 1 END;
CREATE OR REPLACE TEMP MACRO __ml_bucket(x, splits) AS
  CASE WHEN x IS NOT NULL THEN 'bin_' || (1 + len(list_filter(splits, lambda s: s <= x)))::VARCHAR END;
CREATE OR REPLACE TEMP MACRO __ml_most_frequent(h) AS
  list_sort(list_transform(map_entries(h), lambda e: {'n': -(e.value::BIGINT), 'k': e.key}))[1].k;
CREATE OR REPLACE TEMP MACRO __ml_vocabulary(h, top_k, threshold) AS
  list_sort(list_transform(list_slice(list_sort(list_transform(
    list_filter(map_entries(h), lambda e: e.value >= threshold),
    lambda e: {'n': -(e.value::BIGINT), 'k': e.key})), 1, top_k),
    lambda e: e.k));
CREATE OR REPLACE TEMP MACRO __ml_index(x, vocabulary) AS coalesce(list_position(vocabulary, x), 0);
CREATE OR REPLACE TEMP MACRO __ml_one_hot(x, vocabulary, dropped) AS
  [{'index': __ml_index(x, vocabulary),
    'value': CASE WHEN x = dropped THEN 0.0::DOUBLE ELSE 1.0::DOUBLE END}];
CREATE OR REPLACE TEMP MACRO __ml_indices(xs, vocabulary) AS
  list_transform(xs, lambda e: __ml_index(e, vocabulary));
CREATE OR REPLACE TEMP MACRO __ml_first_seen(ids) AS list_filter(ids, lambda v, i: list_position(ids, v) = i);
CREATE OR REPLACE TEMP MACRO __ml_multi_hot(xs, vocabulary) AS
  list_transform(__ml_first_seen(__ml_indices(xs, vocabulary)), lambda v: {'index': v, 'value': 1.0::DOUBLE});
CREATE OR REPLACE TEMP MACRO __ml_counts(ids) AS
  list_transform(list_sort(list_distinct(ids)),
    lambda d: {'index': d, 'count': len(list_filter(ids, lambda v: v = d))});
CREATE OR REPLACE TEMP MACRO __ml_bag_of_words(xs, vocabulary) AS
  list_transform(__ml_counts(__ml_indices(xs, vocabulary)),
    lambda c: {'index': c.index, 'value': c.count::DOUBLE});
CREATE OR REPLACE TEMP MACRO __ml_document_frequency(docs) AS
  list_aggregate(flatten(list_transform(docs, lambda d: list_distinct(d))), 'histogram');
CREATE OR REPLACE TEMP MACRO __ml_unknown_documents(docs, vocabulary) AS
  len(list_filter(docs, lambda d: list_contains(__ml_indices(d, vocabulary), 0)));
CREATE OR REPLACE TEMP MACRO __ml_tf_idf(xs, vocabulary, df, unknown_df, n) AS
  list_transform(__ml_counts(__ml_indices(xs, vocabulary)), lambda c: {'index': c.index, 'value':
    c.count / len(xs) * ln(1 + n / (1 + CASE WHEN c.index = 0 THEN unknown_df
                                            ELSE df[vocabulary[c.index]] END))});
CREATE OR REPLACE TEMP MACRO __ml_lp_norm(v, p) AS CASE
  WHEN p = 'inf'::DOUBLE THEN list_max(list_transform(v, lambda e: abs(e)))
  WHEN p = 0 THEN len(list_filter(v, lambda e: e <> 0))::DOUBLE
  ELSE power(list_sum(list_transform(v, lambda e: power(abs(e), p))), 1 / p) END;
CREATE OR REPLACE TEMP MACRO __ml_normalizer(v, p) AS
  list_transform(v, lambda e: CASE WHEN __ml_lp_norm(v, p) = 0 THEN e ELSE e / __ml_lp_norm(v, p) END);
CREATE OR REPLACE TEMP MACRO __ml_distance(a, b, kind) AS CASE upper(kind)
  WHEN 'EUCLIDEAN' THEN sqrt(list_sum(list_transform(list_zip(a, b), lambda p: power(p[1] - p[2], 2))))
  WHEN 'MANHATTAN' THEN list_sum(list_transform(list_zip(a, b), lambda p: abs(p[1] - p[2])))
  WHEN 'COSINE' THEN 1 - list_dot_product(a::DOUBLE[], b::DOUBLE[])
    / (sqrt(list_dot_product(a::DOUBLE[], a::DOUBLE[])) * sqrt(list_dot_product(b::DOUBLE[], b::DOUBLE[])))
  ELSE error('ML.DISTANCE: distance type must be EUCLIDEAN, MANHATTAN or COSINE, got ' || kind) END;
CREATE OR REPLACE TEMP MACRO __ml_ngrams(xs, lo, hi, sep) AS flatten(list_transform(range(1, len(xs) + 1),
  lambda i: list_transform(list_filter(range(lo, hi + 1), lambda n: i + n - 1 <= len(xs)),
                      lambda n: array_to_string(xs[i:i + n - 1], sep))));
"""


@dataclass(frozen=True)
class Recipe:
    """One analytic function's fit (named statistics, each an aggregate marked `<over>` where a
    window goes) and apply (a macro call whose `<name>`s are the fitted values)."""

    stats: dict[str, str]
    apply: str

    def fit_sql(self, fitted: dict[str, str] | None = None) -> str:
        """The fitted statistics as a SELECT list: `avg(x) AS mean, ...`. A statistic may use an
        earlier one (`<vocabulary>`): pass its fitted value as a literal, or the earlier
        statistic's SQL is inlined."""
        return ", ".join(f"{sql} AS {name}" for name, sql in self._resolved("", fitted or {}).items())

    def _resolved(self, over: str, fitted: dict[str, str]) -> dict[str, str]:
        done: dict[str, str] = {}
        for name, sql in self.stats.items():
            sql = sql.replace("<over>", f" {over}" if over else "")
            for earlier, value in {**done, **fitted}.items():
                sql = sql.replace(f"<{earlier}>", value)
            done[name] = fitted.get(name, f"({sql})")
        return done

    def apply_sql(self, fitted: dict[str, str]) -> str:
        """The function applied with the given statistics (SQL literals or expressions)."""
        sql = self.apply
        for name, value in fitted.items():
            sql = sql.replace(f"<{name}>", value)
        return sql

    def window_sql(self, over: str) -> str:
        """The function as BigQuery's OVER form: each statistic a window aggregate."""
        return self.apply_sql(self._resolved(over, {}))


def _args(name: str, args: list[str], least: int, most: int, usage: str) -> None:
    if not least <= len(args) <= most:
        raise SqlError(f"ML.{name} takes {usage}")


def recipe_for(name: str, args: list[str]) -> Recipe:
    """The recipe of analytic function `ML.<name>` for its arguments' SQL (DuckDB)."""
    x = args[0] if args else ""
    if name == "STANDARD_SCALER":
        _args(name, args, 1, 1, "one numeric expression")
        return Recipe(
            {"mean": f"avg({x})<over>", "stddev": f"stddev_samp({x})<over>"},
            f"__ml_standard_scaler({x}, <mean>, <stddev>)",
        )
    if name == "MIN_MAX_SCALER":
        _args(name, args, 1, 1, "one numeric expression")
        return Recipe(
            {"min": f"min({x})<over>", "max": f"max({x})<over>"}, f"__ml_min_max_scaler({x}, <min>, <max>)"
        )
    if name == "MAX_ABS_SCALER":
        _args(name, args, 1, 1, "one numeric expression")
        return Recipe({"max_abs": f"max(abs({x}))<over>"}, f"__ml_max_abs_scaler({x}, <max_abs>)")
    if name == "ROBUST_SCALER":
        _args(
            name,
            args,
            1,
            4,
            "a numeric expression [, with_median] [, with_quantile_range] [, quantile_range]",
        )
        median, scale = (args[1:3] + ["TRUE", "TRUE"])[:2]
        bounds = [float(b) / 100 for b in re.findall(r"[\d.]+", args[3])] if len(args) > 3 else [0.25, 0.75]
        if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1] <= 1:
            raise SqlError(f"ML.ROBUST_SCALER: quantile_range must be [low, high] percentiles, got {args[3]}")
        q = f"quantile_cont({x}, [{bounds[0]!r}, 0.5, {bounds[1]!r}])<over>"
        return Recipe({"quantiles": q}, f"__ml_robust_scaler({x}, <quantiles>, {median}, {scale})")
    if name == "IMPUTER":
        _args(name, args, 2, 2, "an expression and a strategy, 'mean' | 'median' | 'most_frequent'")
        strategy = args[1].strip("'").lower()
        stat = {
            "mean": f"avg({x})<over>",
            "median": f"quantile_cont({x}, 0.5)<over>",
            "most_frequent": f"__ml_most_frequent(histogram({x})<over>)",
        }
        if strategy not in stat:
            raise SqlError(f"ML.IMPUTER: strategy must be 'mean', 'median' or 'most_frequent', got {args[1]}")
        return Recipe({"fill": stat[strategy]}, f"coalesce({x}, <fill>)")
    if name == "QUANTILE_BUCKETIZE":
        _args(name, args, 2, 2, "a numeric expression and the number of buckets")
        try:
            buckets = int(args[1])
        except ValueError:
            raise SqlError(
                f"ML.QUANTILE_BUCKETIZE: num_buckets must be an integer literal, got {args[1]}"
            ) from None
        points = ", ".join(f"{k / buckets!r}" for k in range(1, buckets))
        return Recipe(
            {"splits": f"list_distinct(quantile_cont({x}, [{points}])<over>)"}, f"__ml_bucket({x}, <splits>)"
        )
    if name in ("LABEL_ENCODER", "ONE_HOT_ENCODER"):
        drop = "'none'"
        if name == "ONE_HOT_ENCODER" and len(args) > 1:
            drop, args = args[1], [x, *args[2:]]
        _args(name, args, 1, 3, "a string expression [, top_k] [, frequency_threshold]")
        top_k, threshold = (args[1:] + [TOP_K, THRESHOLD][len(args) - 1 :])[:2]
        vocabulary = f"__ml_vocabulary(histogram({x})<over>, {top_k}, {threshold})"
        if name == "LABEL_ENCODER":
            return Recipe({"vocabulary": vocabulary}, f"__ml_index({x}, <vocabulary>)")
        if drop.strip("'").lower() not in ("none", "most_frequent"):
            raise SqlError(f"ML.ONE_HOT_ENCODER: drop must be 'none' or 'most_frequent', got {drop}")
        dropped = f"__ml_most_frequent(histogram({x})<over>)" if "most" in drop.lower() else "NULL::VARCHAR"
        return Recipe(
            {"vocabulary": vocabulary, "dropped": dropped}, f"__ml_one_hot({x}, <vocabulary>, <dropped>)"
        )
    if name in ("MULTI_HOT_ENCODER", "BAG_OF_WORDS", "TF_IDF"):
        _args(name, args, 1, 3, "an array of strings [, top_k] [, frequency_threshold]")
        top_k, threshold = (args[1:] + [TOP_K, THRESHOLD][len(args) - 1 :])[:2]
        df = f"__ml_document_frequency(list({x})<over>)"
        stats = {"vocabulary": f"__ml_vocabulary({df}, {top_k}, {threshold})"}  # several stats: in order
        if name == "MULTI_HOT_ENCODER":
            return Recipe(stats, f"__ml_multi_hot({x}, <vocabulary>)")
        if name == "BAG_OF_WORDS":
            return Recipe(stats, f"__ml_bag_of_words({x}, <vocabulary>)")
        stats = {
            "df": df,
            "vocabulary": f"__ml_vocabulary(<df>, {top_k}, {threshold})",
            "n": f"count({x})<over>",
            "unknown_df": f"__ml_unknown_documents(list({x})<over>, <vocabulary>)",
        }
        return Recipe(stats, f"__ml_tf_idf({x}, <vocabulary>, <df>, <unknown_df>, <n>)")
    raise SqlError(f"ML.{name} is not an analytic preprocessing function")


ANALYTIC = (
    "STANDARD_SCALER", "MIN_MAX_SCALER", "MAX_ABS_SCALER", "ROBUST_SCALER", "IMPUTER",
    "QUANTILE_BUCKETIZE", "LABEL_ENCODER", "ONE_HOT_ENCODER", "MULTI_HOT_ENCODER", "BAG_OF_WORDS", "TF_IDF",
)  # fmt: skip
SCALAR = (
    "NORMALIZER",
    "LP_NORM",
    "DISTANCE",
    "BUCKETIZE",
    "NGRAMS",
    "POLYNOMIAL_EXPAND",
    "FEATURE_CROSS",
    "HASH_BUCKETIZE",
)
FUNCTIONS = (*ANALYTIC, *SCALAR)


def scalar_sql(name: str, args: list[str], nodes: list[exp.Expr]) -> str:
    """The DuckDB SQL of a scalar (non-window) preprocessing function."""
    if name == "NORMALIZER":
        _args(name, args, 1, 2, "an array of numbers [, p]")
        return f"__ml_normalizer({args[0]}::DOUBLE[], {args[1] if len(args) > 1 else '2'}::DOUBLE)"
    if name == "LP_NORM":
        _args(name, args, 2, 2, "an array of numbers and the degree p")
        return f"__ml_lp_norm({args[0]}::DOUBLE[], {args[1]}::DOUBLE)"
    if name == "DISTANCE":
        _args(name, args, 2, 3, "two arrays of numbers [, 'EUCLIDEAN' | 'MANHATTAN' | 'COSINE']")
        kind = args[2] if len(args) > 2 else "'EUCLIDEAN'"
        return f"__ml_distance({args[0]}::DOUBLE[], {args[1]}::DOUBLE[], {kind})"
    if name == "BUCKETIZE":
        _args(name, args, 2, 3, "a numeric expression, [split points] [, exclude_boundaries]")
        splits = args[1]
        if len(args) > 2:
            splits = f"CASE WHEN {args[2]} THEN {splits}[2:-2] ELSE {splits} END"
        return f"__ml_bucket({args[0]}, {splits})"
    if name == "NGRAMS":
        _args(name, args, 2, 3, "an array of strings, [min, max] [, separator]")
        sep = args[2] if len(args) > 2 else "' '"
        return f"__ml_ngrams({args[0]}, ({args[1]})[1], ({args[1]})[-1], {sep})"
    if name == "HASH_BUCKETIZE":
        _args(name, args, 2, 2, "a string expression and the number of buckets")
        return f"__inferline_hash_bucketize({args[0]}, {args[1]})"
    return _struct_sql(name, args, nodes)


def _struct_sql(name: str, args: list[str], nodes: list[exp.Expr]) -> str:
    import itertools

    usage = "STRUCT(a, b, ...) [, degree]"
    _args(name, args, 1, 2, usage)
    struct = nodes[0]
    if not isinstance(struct, exp.Struct):
        raise SqlError(f"ML.{name} takes {usage}: a STRUCT(...) written in the statement")
    fields: list[tuple[str, str]] = []
    for item in struct.expressions:
        if isinstance(item, exp.PropertyEQ):
            fields.append((item.this.name, item.expression.sql("duckdb")))
        else:
            fields.append(
                (item.alias_or_name, (item.this if isinstance(item, exp.Alias) else item).sql("duckdb"))
            )
    degree = int(args[1]) if len(args) > 1 else 2
    out: list[tuple[str, str]] = []
    if name == "POLYNOMIAL_EXPAND":
        for d in range(1, degree + 1):
            for combo in itertools.combinations_with_replacement(fields, d):
                out.append(("_".join(n for n, _ in combo), " * ".join(f"({v})::DOUBLE" for _, v in combo)))
    else:
        for d in range(2, degree + 1):
            for combo in itertools.combinations(fields, d):
                out.append(
                    ("_".join(n for n, _ in combo), " || '_' || ".join(f"({v})::VARCHAR" for _, v in combo))
                )
    return "struct_pack(" + ", ".join(f'"{n}" := {v}' for n, v in out) + ")"


def rewrite(tree: exp.Expr, con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Replace each `ML.<preprocessing function>(...) [OVER (...)]` in `tree` by its DuckDB SQL
    (innermost first, so a call's arguments are already rewritten). With `con`, the array
    encoders over the whole input are fitted once now (see `_fit_once`)."""
    calls = [
        dot
        for dot in tree.find_all(exp.Dot)
        if isinstance(dot.this, exp.Identifier)
        and dot.this.name.upper() == "ML"
        and isinstance(dot.expression, exp.Anonymous)
        and dot.expression.name.upper() in FUNCTIONS
    ]
    for dot in reversed(calls):
        call = dot.expression
        name = call.name.upper()
        nodes = list(call.expressions)
        args = [a.sql("duckdb") for a in nodes]
        window = dot.parent if isinstance(dot.parent, exp.Window) and dot.parent.this is dot else None
        if name in ANALYTIC:
            over = "OVER ()"
            if window is not None:
                spec = window.copy()
                spec.set("this", exp.Var(this="__w"))
                over = spec.sql("duckdb").removeprefix("__w ")
            recipe = recipe_for(name, args)
            fitted = None
            if name in FIT_ONCE:
                fitted = _fit_once(con, tree, dot, recipe_for(name, [ARGUMENT, *args[1:]]), over)
            sql = recipe.window_sql(over) if fitted is None else recipe.apply_sql(fitted)
        elif window is not None:
            raise SqlError(f"ML.{name} is not an analytic function; call it without OVER (...)")
        else:
            sql = scalar_sql(name, args, nodes)
        (window or dot).replace(exp.Paren(this=exp.Var(this=sql)))


# Their statistic is a list of every row's array: as a window it is copied to each row (1,000
# rows took 38 s), so over the whole input they are fitted by one query at translation.
FIT_ONCE = ("MULTI_HOT_ENCODER", "BAG_OF_WORDS", "TF_IDF")
ARGUMENT = "__inferline_argument"


def _fit_once(
    con: duckdb.DuckDBPyConnection | None, tree: exp.Expr, dot: exp.Expr, recipe: Recipe, over: str
) -> dict[str, str] | None:
    """The statistics of `recipe` (written over ARGUMENT) computed now over the SELECT's input,
    as SQL literals; None when
    the window is not the whole input or the input cannot be queried alone (the window form
    answers then)."""
    select = dot.find_ancestor(exp.Select)
    if con is None or over != "OVER ()" or select is None:
        return None
    if any(select.args.get(k) for k in ("group", "having", "distinct")) or select.find(exp.AggFunc):
        return None
    argument = dot.expression.expressions[0]
    if argument.find(exp.Window, exp.Var) is not None:
        return None
    source = select.copy()
    source.set("expressions", [exp.alias_(argument.copy(), ARGUMENT)])
    for key in ("order", "limit", "offset", "qualify"):
        source.set(key, None)
    with_ = tree.args.get("with_") or tree.args.get("with")
    prefix = with_.sql("duckdb") + " " if select is not tree and isinstance(with_, exp.With) else ""
    fitted: dict[str, str] = {}
    try:
        for name, sql in recipe.stats.items():
            query = Recipe({name: sql}, "").fit_sql(fitted)
            # LIMIT 1: a statistic made of earlier ones only is the same on every row.
            rows = con.execute(f"{prefix}SELECT {query} FROM ({source.sql('duckdb')}) LIMIT 1").fetchall()
            fitted[name] = literal(rows[0][0] if rows else None)
    except duckdb.Error:
        return None
    return fitted


def literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dict):
        if not value:
            return "MAP {}::MAP(VARCHAR, BIGINT)"
        return "MAP {" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]::VARCHAR[]"
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise SqlError(f"cannot write {type(value).__name__} as SQL")
