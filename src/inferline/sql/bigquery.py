"""BigQuery-ML statements -> DuckDB, with sqlglot (BigQuery dialect).

Only statements that use BigQuery-ML (`CREATE MODEL`, `DROP MODEL`, `CREATE EXTERNAL TABLE`,
`ML.<function>`) or BigQuery's names are parsed and translated; every other statement goes to
DuckDB untouched, so native DuckDB SQL (and `predict(...)`) keeps working. Names map as
sql/names.py says; DDL runs in sql/ddl.py; ML.PREDICT becomes a model UDF (sql/mlpredict.py),
ML.EVALUATE and friends metrics (sql/evaluate.py), the image and preprocessing functions
DuckDB functions (sql/image_functions.py, sql/preprocessing.py).
"""

from __future__ import annotations

import dataclasses
import functools

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import Token

from inferline.errors import SqlError
from inferline.models.base import LoadedModel
from inferline.sql import batching, ddl, dialect, evaluate, fused, model_info, names, objects, preprocessing
from inferline.sql.catalog import drop_model
from inferline.sql.ddl import Session
from inferline.sql.mlpredict import predict_subquery
from inferline.sql.names import table_name
from inferline.sql.training import transform

# ML.<name> scalar functions -> inferline's DuckDB functions, with the argument counts they take.
ML_FUNCTIONS: dict[str, tuple[str, tuple[int, ...]]] = {
    "DECODE_IMAGE": ("decode_image", (1,)),
    "RESIZE_IMAGE": ("resize_image", (4,)),
    "CONVERT_COLOR_SPACE": ("convert_color_space", (2,)),
    "CONVERT_IMAGE_TYPE": ("convert_image_type", (1,)),
}
SUPPORTED_ML = (
    "PREDICT", "EVALUATE", "CONFUSION_MATRIX", "ROC_CURVE", *ML_FUNCTIONS, *preprocessing.FUNCTIONS,
    *model_info.FUNCTIONS,
)  # fmt: skip


def _tokens(text: str) -> list[Token]:
    try:
        return list(sqlglot.tokenize(text, read="bigquery"))
    except sqlglot.errors.TokenError:
        return []


def _words(tokens: list[Token]) -> list[str]:
    return [t.text.upper() for t in tokens]


def _statement_head(words: list[str]) -> list[str]:
    """The first words with OR REPLACE / TEMP / IF [NOT] EXISTS dropped."""
    skip = {"OR", "REPLACE", "TEMP", "TEMPORARY", "IF", "NOT", "EXISTS"}
    return [w for w in words[:8] if w not in skip]


def is_bigquery_ml(text: str, con: duckdb.DuckDBPyConnection | None = None) -> bool:
    """Whether a statement needs translating (uses BigQuery-ML or BigQuery's names, see
    sql/names.py), judged from its tokens."""
    tokens = _tokens(text)
    words = _words(tokens)
    if "EXTERNAL_OBJECT_TRANSFORM" in words or names.uses_bigquery_names(text, tokens, con):
        return True
    head = _statement_head(words)
    if len(head) >= 2 and head[0] in ("CREATE", "DROP", "ALTER") and head[1] == "MODEL":
        return True
    if words[:1] == ["EXPORT"] and "MODEL" in words[:3]:
        return True
    if len(head) >= 3 and head[0] == "CREATE" and head[1] == "EXTERNAL":
        return True
    return any(names.ml_function(tokens, i) for i in range(len(tokens)))


def translate(text: str, session: Session) -> list[str]:
    """DuckDB statements for one BigQuery-ML statement (model DDL runs here and gives none)."""
    tokens = _tokens(text)
    words = _words(tokens)
    head = _statement_head(words)
    for i in range(len(tokens)):
        name = names.ml_function(tokens, i)
        if name is not None and name not in SUPPORTED_ML:
            raise SqlError(
                f"ML.{name} is not supported; inferline runs ML.PREDICT, ML.EVALUATE, "
                "ML.CONFUSION_MATRIX, ML.ROC_CURVE, the trained models' ML.TRAINING_INFO, "
                "ML.FEATURE_INFO, ML.WEIGHTS, ML.CENTROIDS, ML.EXPLAIN_PREDICT, ML.GLOBAL_EXPLAIN, "
                "ML.DETECT_ANOMALIES and BigQuery ML's image and preprocessing functions"
            )
    if head[:2] in (["ALTER", "MODEL"],) or words[:1] == ["EXPORT"]:
        raise SqlError(f"{words[0]} MODEL is not supported; use CREATE OR REPLACE MODEL to change a model")
    if head[:2] == ["CREATE", "EXTERNAL"]:
        text = ddl.strip_connection(text, tokens)
    if head[:2] == ["DROP", "MODEL"]:
        text = names.strip_colon_project(text)
    columns_of = functools.partial(_query_columns, session=session)
    text = evaluate.mark(model_info.rewrite(objects.rewrite_object_transforms(text), session, columns_of))
    try:
        tree = sqlglot.parse_one(text, read="bigquery")
    except sqlglot.errors.ParseError as exc:
        raise SqlError(f"cannot parse as BigQuery SQL: {str(exc).splitlines()[0]}") from None
    if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() == "MODEL":
        source = tree.expression
        query = translate_query(source.copy(), session) if isinstance(source, exp.Query) else None
        ddl.create_model(tree, session, query=query)
        return []
    if isinstance(tree, exp.Drop) and str(tree.args.get("kind", "")).upper() == "MODEL":
        for table in tree.args.get("tables") or [tree.this]:
            name = table_name(table)
            drop_model(session.con, name, if_exists=bool(tree.args.get("exists")))
            session.con.execute(f"DROP TABLE IF EXISTS {evaluate.evaluation_table(name)}")
            session.con.execute(f"DROP TABLE IF EXISTS {evaluate.metrics_table(name)}")
            session.resolver.forget(name)
        return []
    if isinstance(tree, exp.Create) and ddl.is_external(tree):
        return ddl.create_external_table(tree)
    return [translate_query(tree, session)]


def _query_columns(text: str, session: Session) -> list[str]:
    """The columns of a BigQuery query (ML.RECOMMEND's input), translated and bound, not run."""
    try:
        translated = translate_query(sqlglot.parse_one(text, read="bigquery"), session)
        return list(session.con.sql(f"SELECT * FROM ({translated}) LIMIT 0").columns)
    except (sqlglot.errors.ParseError, duckdb.Error) as exc:
        raise SqlError(f"ML.RECOMMEND: the input query fails: {str(exc).splitlines()[0]}") from None


def translate_query(tree: exp.Expr, session: Session) -> str:
    """A query using ML.PREDICT / ML.DECODE_IMAGE -> DuckDB SQL (registering its UDFs)."""
    names.localize_tables(tree, names.attached_databases(session.con))
    dialect.rewrite(tree)
    preprocessing.rewrite(tree, session.con)
    for dot in list(tree.find_all(exp.Dot)):
        if isinstance(dot.this, exp.Identifier) and dot.this.name.upper() == "ML":
            call = dot.expression
            if isinstance(call, exp.Anonymous) and call.name.upper() in ML_FUNCTIONS:
                local, counts = ML_FUNCTIONS[call.name.upper()]
                if len(call.expressions) not in counts:
                    raise SqlError(_usage(call.name.upper()))
                dot.replace(exp.Anonymous(this=local, expressions=list(call.expressions)))
    predicts = list(tree.find_all(exp.Predict))
    # Object tables feeding a model are read sorted, in full chunks (see sql/batching.py).
    tables = batching.object_tables(session.con) if predicts else set()
    shadowed = batching.cte_names(tree)
    replacements: dict[str, str] = {}
    for i, node in enumerate(predicts):
        model = table_name(node.this)
        where = f"ML.PREDICT(MODEL {model})"
        if any(isinstance(n, exp.Predict) for n in node.expression.find_all(exp.Predict) if n is not node):
            raise SqlError(f"{where}: nested ML.PREDICT is not supported; use a CTE or a table")
        thresholds = evaluate.roc_thresholds(node, f"ML.ROC_CURVE(MODEL {model})")
        evaluating = evaluate.marked(node)
        if evaluating:
            where = f"ML.{evaluating}(MODEL {model})"
        per_row = evaluating in model_info.INPUT_FUNCTIONS  # their STRUCT holds their own options
        threshold = None if per_row else _threshold(node.args.get("params_struct"), where)
        source = node.expression
        if isinstance(source, exp.Table) and source.name.startswith(evaluate.EVALUATION_PREFIX):
            stored = _stored_metrics(session, source.name) if evaluating == "EVALUATE" else None
            if stored is not None:  # worked out at training (sql/training/evaluation.py)
                replacements[f"__inferline_ml_predict_slot_{i}"] = f"(SELECT * FROM {stored})"
                _replace_call(node, f"__inferline_ml_predict_slot_{i}")
                continue
            _require_evaluation_rows(session, source.name, where)
        if isinstance(source, exp.Subquery):
            inner = source.this
        elif isinstance(source, exp.Table):
            inner = exp.select("*").from_(source.copy())
        else:
            raise SqlError(f"{where}: expected (SELECT ...) or TABLE name as the second argument")
        inner_sql = inner.sql("duckdb")
        batched_sql = inner_sql
        if tables and batching.sort_object_scans(inner, tables, shadowed):
            batched_sql = inner.sql("duckdb")
        decoded = fused.decoded_inputs(inner)
        loaded = session.resolver.get(model)
        ctes_sql = _visible_ctes(tree, node)
        entry = session.resolver.entry(model)
        if entry is not None and entry.transform:  # the model's TRANSFORM, fitted at CREATE MODEL
            fitted = [(name, sql) for name, sql in entry.transform]
            columns = _input_columns(session, ctes_sql, inner_sql, where)
            inner_sql = transform.apply_sql(fitted, inner_sql, columns)
            batched_sql = transform.apply_sql(fitted, batched_sql, columns)
            decoded = {}
        placeholder = f"__inferline_ml_predict_slot_{i}"
        if per_row and evaluating is not None:  # computed here, a registered table
            given = model_info.options(
                node.args.get("params_struct"), model_info.INPUT_FUNCTIONS[evaluating], where
            )
            query = f"{ctes_sql} SELECT * FROM ({inner_sql})"
            outputs = entry.outputs if entry is not None else []
            replacements[placeholder] = model_info.per_row(
                session, loaded, evaluating, query, outputs, given, where
            )
            _replace_call(node, placeholder)
            continue
        if evaluating == "EVALUATE" and model_info.unsupervised(loaded):  # kmeans, pca: no label
            query = f"{ctes_sql} SELECT * FROM ({inner_sql})"
            replacements[placeholder] = model_info.evaluate_unsupervised(session, loaded, query, where)
            _replace_call(node, placeholder)
            continue
        if evaluating:
            # The true values travel under a private name: an ONNX classifier's own output
            # is called `label` too.
            label = _label_column(session, model)
            _require_column(session, ctes_sql, inner_sql, label, where)
            truth = f"SELECT * EXCLUDE ({_quote(label)}), {_quote(label)} AS {evaluate.TRUTH} FROM "
            inner_sql, batched_sql = (f"{truth}({sql})" for sql in (inner_sql, batched_sql))
            decoded = {name: dataclasses.replace(d, sql=f"{truth}({d.sql})") for name, d in decoded.items()}
        subquery, outputs = predict_subquery(
            session.con,
            loaded,
            model,
            inner_sql,
            ctes_sql,
            session.errors,
            batched_sql=batched_sql,
            exclude=(evaluate.TRUTH,) if evaluating else (),
            threshold=threshold,
            decoded=decoded,
        )
        if evaluating:
            subquery = _evaluation(
                session, loaded, subquery, ctes_sql, outputs, where, evaluating, thresholds
            )
        replacements[placeholder] = subquery
        _replace_call(node, placeholder)
    if tables:  # after the probes above, which read the CTEs as written
        for cte in tree.find_all(exp.CTE):
            batching.sort_object_scans(cte.this, tables, shadowed)
    _zero_based_offsets(tree, replacements)
    sql = tree.sql("duckdb")
    for placeholder, subquery in replacements.items():
        sql = sql.replace(placeholder, subquery)
    return sql


def _replace_call(node: exp.Expr, placeholder: str) -> None:
    holder = node.parent if isinstance(node.parent, exp.Table) else node
    alias = holder.args.get("alias") if holder is not node else None
    holder.replace(exp.Table(this=exp.to_identifier(placeholder), alias=alias))


def _usage(name: str) -> str:
    return {
        "DECODE_IMAGE": "ML.DECODE_IMAGE takes one argument, the object table's data column",
        "RESIZE_IMAGE": "ML.RESIZE_IMAGE takes image, target_height, target_width, preserve_aspect_ratio",
        "CONVERT_COLOR_SPACE": "ML.CONVERT_COLOR_SPACE takes image and 'RGB'|'GRAYSCALE'|'HSV'|'YIQ'|'YUV'",
        "CONVERT_IMAGE_TYPE": "ML.CONVERT_IMAGE_TYPE takes one argument, an image",
    }[name]


def _label_column(session: Session, model: str) -> str:
    entry = session.resolver.entry(model)
    labels = entry.label_columns if entry is not None else []
    return labels[0] if labels else evaluate.DEFAULT_LABEL


def _threshold(params: exp.Expr | None, where: str) -> float | None:
    """`STRUCT(0.6 AS threshold)`: the probability above which a binary classifier says its
    second class (BigQuery's ML.PREDICT option); no other option is supported."""
    if params is None:
        return None
    threshold = None
    for item in params.expressions if isinstance(params, exp.Struct) else [params]:
        if isinstance(item, exp.PropertyEQ):
            name, value = item.this.name, item.expression
        elif isinstance(item, exp.Alias):
            name, value = item.alias, item.this
        else:
            name, value = "", item
        if name.lower() != "threshold":
            shown = name or item.sql("bigquery")
            raise SqlError(f"{where}: option {shown} is not supported (supported: threshold)")
        number = float(value.this) if isinstance(value, exp.Literal) and not value.is_string else -1.0
        if not 0 <= number <= 1:
            shown = value.sql("bigquery")
            raise SqlError(f"{where}: threshold must be a number between 0 and 1, got {shown}")
        threshold = number
    return threshold


def _stored_metrics(session: Session, rows_table: str) -> str | None:
    """The table of ML.EVALUATE's stored row beside a model's evaluation-rows table, if any."""
    table = evaluate.METRICS_PREFIX + rows_table.removeprefix(evaluate.EVALUATION_PREFIX)
    return table if _table_exists(session, table) else None


def _table_exists(session: Session, table: str) -> bool:
    rows = session.con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchall()
    return bool(rows[0][0])


def _require_evaluation_rows(session: Session, table: str, where: str) -> None:
    if not _table_exists(session, table):
        raise SqlError(
            f"{where}: without input data, ML.EVALUATE needs a model trained here by CREATE MODEL "
            "... AS SELECT in this database; give the rows: ML.EVALUATE(MODEL m, (SELECT ...))"
        )


def _input_columns(session: Session, ctes_sql: str, inner_sql: str, where: str) -> list[str]:
    try:
        return list(session.con.sql(f"{ctes_sql} SELECT * FROM ({inner_sql}) LIMIT 0").columns)
    except duckdb.Error as exc:
        raise SqlError(f"{where}: the input subquery fails: {str(exc).splitlines()[0]}") from None


def _require_column(session: Session, ctes_sql: str, inner_sql: str, label: str, where: str) -> None:
    columns = _input_columns(session, ctes_sql, inner_sql, where)
    if label not in columns:
        raise SqlError(
            f"{where}: the input has no label column {label!r} (columns: {', '.join(columns)}); "
            "select the true values AS label, or CREATE MODEL ... OPTIONS(input_label_cols=['name'])"
        )


def _evaluation(
    session: Session,
    loaded: LoadedModel,
    subquery: str,
    ctes_sql: str,
    outputs: list[str],
    where: str,
    function: str,
    thresholds: list[float] | None = None,
) -> str:
    """ML.EVALUATE / CONFUSION_MATRIX / ROC_CURVE over the predicted rows, as a subquery of literals."""
    classes = getattr(loaded.model, "classes_", None)
    classifier = classes is not None or len(outputs) > 1
    return evaluate.evaluate(
        session.con,
        f"({ctes_sql} SELECT * FROM {subquery})",
        evaluate.TRUTH,
        outputs,
        list(classes) if classes is not None else None,
        function=function,
        classifier=classifier,
        where=where,
        thresholds=thresholds,
    )


def _visible_ctes(tree: exp.Expr, node: exp.Expr) -> str:
    """The statement's CTEs that an ML.PREDICT input may read: those before the one it is in."""
    with_ = tree.args.get("with_") or tree.args.get("with")
    if not isinstance(with_, exp.With):
        return ""
    visible = []
    for cte in with_.expressions:
        if cte.find(exp.Predict) is not None:
            break
        visible.append(cte.sql("duckdb"))
    if not visible:
        return ""
    return ("WITH RECURSIVE " if with_.args.get("recursive") else "WITH ") + ", ".join(visible)


def _zero_based_offsets(tree: exp.Expr, replacements: dict[str, str]) -> None:
    # sqlglot writes BigQuery's `UNNEST(a) AS v WITH OFFSET AS i` as DuckDB's 1-based
    # WITH ORDINALITY; BigQuery's offsets start at 0, so spell it out instead.
    for i, node in enumerate(list(tree.find_all(exp.Unnest))):
        offset = node.args.get("offset")
        if offset is None or len(node.expressions) != 1:
            continue
        alias = node.args.get("alias")
        columns = alias.columns if isinstance(alias, exp.TableAlias) else []
        value = columns[0].name if columns else "value"
        index = offset.name if isinstance(offset, exp.Identifier) else "offset"
        array = node.expressions[0].sql("duckdb")
        placeholder = f"__inferline_unnest_slot_{i}"
        replacements[placeholder] = (
            f"(SELECT unnest({array}) AS {_quote(value)}, "
            f"generate_subscripts({array}, 1) - 1 AS {_quote(index)})"
        )
        node.replace(
            exp.Table(
                this=exp.to_identifier(placeholder),
                alias=exp.TableAlias(this=exp.to_identifier(f"_unnest{i}")),
            )
        )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
