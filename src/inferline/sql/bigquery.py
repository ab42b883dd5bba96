"""BigQuery-ML statements -> DuckDB, with sqlglot (BigQuery dialect).

Only statements that use BigQuery-ML (`CREATE MODEL`, `DROP MODEL`, `CREATE EXTERNAL TABLE`,
`ML.<function>`) are parsed and translated; every other statement goes to DuckDB untouched,
so native DuckDB SQL (and `predict(...)`) keeps working. `ds.t` names map to DuckDB
schema `ds`, table `t`; a leading project (`proj.ds.t`) is dropped.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from inferline.errors import InferlineError, SqlError
from inferline.models.base import LoadedModel
from inferline.sql import batching, evaluate, fused, names, objects, preprocessing
from inferline.sql.catalog import MODEL_TYPES, CatalogModel, drop_model, put_model
from inferline.sql.mlpredict import predict_subquery
from inferline.sql.names import table_name
from inferline.sql.resolver import ModelResolver, load_catalog_model

# ML.<name> scalar functions -> inferline's DuckDB functions, with the argument counts they take.
ML_FUNCTIONS: dict[str, tuple[str, tuple[int, ...]]] = {
    "DECODE_IMAGE": ("decode_image", (1,)),
    "RESIZE_IMAGE": ("resize_image", (4,)),
    "CONVERT_COLOR_SPACE": ("convert_color_space", (2,)),
    "CONVERT_IMAGE_TYPE": ("convert_image_type", (1,)),
}
SUPPORTED_ML = (
    "PREDICT", "EVALUATE", "CONFUSION_MATRIX", "ROC_CURVE", *ML_FUNCTIONS, *preprocessing.FUNCTIONS
)  # fmt: skip
# model_class / model_params (JSON) are inferline's: a PyTorch state_dict needs its class.
MODEL_OPTIONS = ("model_type", "model_path", "model_class", "model_params", "input_label_cols")
REMOTE_OPTIONS = ("endpoint", "auth_env")
TABLE_OPTIONS = ("uris", "object_metadata", "format", "max_staleness", "metadata_cache_mode")


class Session(Protocol):
    con: duckdb.DuckDBPyConnection
    resolver: ModelResolver
    errors: list[InferlineError]


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
    return any(_ml_call(tokens, i) for i in range(len(tokens)))


def _ml_call(tokens: list[Token], i: int) -> str | None:
    if (
        i + 2 < len(tokens)
        and tokens[i].text.upper() == "ML"
        and tokens[i + 1].token_type == TokenType.DOT
        and (i == 0 or tokens[i - 1].token_type != TokenType.DOT)
    ):
        return tokens[i + 2].text.upper()
    return None


def translate(text: str, session: Session) -> list[str]:
    """DuckDB statements for one BigQuery-ML statement (model DDL runs here and gives none)."""
    tokens = _tokens(text)
    words = _words(tokens)
    head = _statement_head(words)
    for i in range(len(tokens)):
        name = _ml_call(tokens, i)
        if name is not None and name not in SUPPORTED_ML:
            raise SqlError(
                f"ML.{name} is not supported; inferline runs ML.PREDICT, ML.EVALUATE, "
                "ML.CONFUSION_MATRIX, ML.ROC_CURVE, the image functions (ML.DECODE_IMAGE, ...) and "
                "the preprocessing functions (ML.STANDARD_SCALER, ...; see the README) "
                "(train models in Python, then CREATE MODEL to import them)"
            )
    if head[:2] in (["ALTER", "MODEL"],) or words[:1] == ["EXPORT"]:
        raise SqlError(f"{words[0]} MODEL is not supported; use CREATE OR REPLACE MODEL to change a model")
    if head[:2] == ["CREATE", "EXTERNAL"]:
        text = _strip_connection(text, tokens)
    if head[:2] == ["DROP", "MODEL"]:
        text = names.strip_colon_project(text)
    text = evaluate.mark(objects.rewrite_object_transforms(text))
    try:
        tree = sqlglot.parse_one(text, read="bigquery")
    except sqlglot.errors.ParseError as exc:
        raise SqlError(f"cannot parse as BigQuery SQL: {str(exc).splitlines()[0]}") from None
    if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() == "MODEL":
        create_model(tree, session)
        return []
    if isinstance(tree, exp.Drop) and str(tree.args.get("kind", "")).upper() == "MODEL":
        for table in tree.args.get("tables") or [tree.this]:
            name = table_name(table)
            drop_model(session.con, name, if_exists=bool(tree.args.get("exists")))
            session.resolver.forget(name)
        return []
    if isinstance(tree, exp.Create) and _is_external(tree):
        return create_external_table(tree)
    return [translate_query(tree, session)]


def _strip_connection(text: str, tokens: list[Token]) -> str:
    # sqlglot cannot parse `WITH CONNECTION c`; a local table needs no connection anyway.
    for i, token in enumerate(tokens[:-2]):
        if token.token_type == TokenType.WITH and tokens[i + 1].text.upper() == "CONNECTION":
            end = i + 2
            while end + 2 < len(tokens) and tokens[end + 1].token_type == TokenType.DOT:
                end += 2
            return text[: token.start] + text[tokens[end].end + 1 :]
    return text


def _value(node: exp.Expression, where: str) -> Any:
    if isinstance(node, exp.Interval):  # max_staleness: nothing is cached locally, so no effect
        return node.sql("bigquery")
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else float(node.this)
    if isinstance(node, exp.Array):
        return [_value(e, where) for e in node.expressions]
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    raise SqlError(f"{where}: option value {node.sql('bigquery')} is not a literal")


def _options(create: exp.Create, where: str) -> tuple[dict[str, Any], list[exp.Expression]]:
    options: dict[str, Any] = {}
    others: list[exp.Expression] = []
    props = create.args.get("properties")
    for prop in props.expressions if props is not None else []:
        if type(prop) is exp.Property:
            options[prop.this.name.lower()] = _value(prop.args["value"], where)
        elif isinstance(prop, exp.FileFormatProperty):
            options["format"] = _value(prop.this, where)
        else:
            others.append(prop)
    return options, others


def _column_type(column: exp.Expression) -> str:
    kind = column.args.get("kind")
    return kind.sql("bigquery").upper() if isinstance(kind, exp.Expression) else ""


def create_model(create: exp.Create, session: Session) -> None:
    name = table_name(create.this)
    where = f"CREATE MODEL {name}"
    options, others = _options(create, where)
    inputs: list[str] = []
    outputs: list[str] = []
    output_types: list[str] = []
    remote = False
    for prop in others:
        if isinstance(prop, exp.RemoteWithConnectionModelProperty):
            remote = True
        elif isinstance(prop, exp.TransformModelProperty):
            raise SqlError(
                f"{where}: TRANSFORM(...) is not supported; preprocess in the subquery of ML.PREDICT"
            )
        elif isinstance(prop, exp.InputModelProperty):
            inputs = [c.name for c in prop.this.expressions]
        elif isinstance(prop, exp.OutputModelProperty):
            outputs = [c.name for c in prop.this.expressions]
            output_types = [_column_type(c) for c in prop.this.expressions]
        else:
            raise SqlError(f"{where}: {prop.sql('bigquery')} is not supported")
    if remote:
        entry = remote_model(name, options, inputs, outputs, where)
        put_model(session.con, entry, replace=bool(create.args.get("replace")))
        session.resolver.forget(name)
        return
    model_type = str(options.get("model_type", "")).lower()
    if create.expression is not None or (model_type and model_type not in MODEL_TYPES):
        importing = create.expression is not None and (not model_type or model_type in MODEL_TYPES)
        shown = "AS SELECT ..." if importing else f"model_type='{model_type}'"
        raise SqlError(
            f"{where}: training ({shown}) is not supported; train in Python and import the file "
            f"with model_type={'|'.join(repr(t) for t in MODEL_TYPES)} and model_path="
        )
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise SqlError(
            f"{where}: option {unknown[0]!r} is not supported (supported: {', '.join(MODEL_OPTIONS)})"
        )
    if not model_type or "model_path" not in options:
        raise SqlError(
            f"{where}: needs OPTIONS(model_type='sklearn'|'onnx'|..., model_path='path/or/*.glob')"
        )
    path = _model_folder(str(options["model_path"]), MODEL_TYPES[model_type])
    try:
        params = json.loads(str(options.get("model_params", "{}")))
    except json.JSONDecodeError as exc:
        raise SqlError(
            f"{where}: model_params must be a JSON object string, e.g. '{{\"width\": 16}}' ({exc})"
        ) from None
    if not isinstance(params, dict):
        raise SqlError(f"{where}: model_params must be a JSON object string, e.g. '{{\"width\": 16}}'")
    labels = options.get("input_label_cols", [])
    if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
        raise SqlError(f"{where}: input_label_cols must be a list of column names, e.g. ['species']")
    entry = CatalogModel(
        name=name,
        framework=MODEL_TYPES[model_type],
        path=objects.normalize_uri(path),
        inputs=inputs,
        outputs=outputs,
        model_class=str(options["model_class"]) if "model_class" in options else None,
        model_params=params,
        label_columns=labels,
        output_types=output_types,
    )
    loaded = _load_checked(entry, path, where)
    if put_model(session.con, entry, replace=bool(create.args.get("replace"))):
        session.resolver.forget(name)
        session.resolver.remember(name, loaded)


def _model_folder(path: str, framework: str) -> str:
    """BigQuery names a SavedModel by its files, `gs://bucket/resnet_50/*`: the folder is the model."""
    if framework == "tensorflow" and path.endswith("/*"):
        return path[:-2]
    return path


def _load_checked(entry: CatalogModel, path: str, where: str) -> LoadedModel:
    """Load the model CREATE MODEL registers, so a wrong path or file fails here, not later."""
    from inferline.models.registry import list_versions

    if not list_versions(entry.path):
        raise SqlError(
            f"{where}: model_path {path!r} matches no file"
            + (f" ({entry.path})" if entry.path != path else "")
            + "; give a trained model's "
            "file, or a glob such as 'models/iris-*.onnx' (the newest match is used)"
        )
    try:
        return load_catalog_model(entry)
    except Exception as exc:  # any loader's failure becomes one line naming the statement
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SqlError(f"{where}: cannot load model_path {path!r}: {message}") from None


def remote_model(
    name: str, options: dict[str, Any], inputs: list[str], outputs: list[str], where: str
) -> CatalogModel:
    """`CREATE MODEL m REMOTE WITH CONNECTION c OPTIONS(endpoint=...)`: a KServe v2/TorchServe URL.

    The connection itself holds nothing locally; a token comes from the environment variable
    named by the inferline option `auth_env`, kept in the URL's fragment (never sent).
    """
    unknown = sorted(set(options) - set(REMOTE_OPTIONS))
    if unknown or "endpoint" not in options:
        problem = f"option {unknown[0]!r} is not supported" if unknown else "needs OPTIONS(endpoint=...)"
        raise SqlError(
            f"{where}: {problem}; a remote model takes OPTIONS(endpoint='http://host:port/v2/models/NAME' "
            "or '.../predictions/NAME'[, auth_env='ENV_VAR_WITH_TOKEN'])"
        )
    endpoint = str(options["endpoint"])
    if "://" not in endpoint:  # BigQuery's hosted models are named, e.g. ENDPOINT='gemini-2.0-flash'
        raise SqlError(
            f"{where}: ENDPOINT={endpoint!r} names a Google-hosted model, which runs only in BigQuery; "
            "a remote model here is a KServe v2/TorchServe URL, e.g. 'http://host:8080/v2/models/NAME'"
        )
    from inferline.models.remote import parse_url

    try:
        parse_url(endpoint)
    except InferlineError as exc:
        raise SqlError(f"{where}: {exc}") from None
    if "auth_env" in options:
        endpoint = f"{endpoint.partition('#')[0]}#auth_env={options['auth_env']}"
    return CatalogModel(name=name, framework="remote", path=endpoint, inputs=inputs, outputs=outputs)


def _is_external(create: exp.Create) -> bool:
    props = create.args.get("properties")
    return props is not None and any(isinstance(p, exp.ExternalProperty) for p in props.expressions)


def create_external_table(create: exp.Create) -> list[str]:
    name = table_name(create.this)
    where = f"CREATE EXTERNAL TABLE {name}"
    options, _ = _options(create, where)
    unknown = sorted(set(options) - set(TABLE_OPTIONS))
    if unknown:
        raise SqlError(
            f"{where}: option {unknown[0]!r} is not supported (supported: uris, object_metadata, format)"
        )
    uris = options.get("uris")
    if isinstance(uris, str):
        uris = [uris]
    if not uris:
        raise SqlError(f"{where}: needs OPTIONS(uris=['path/*', ...])")
    uris = [objects.normalize_uri(str(u)) for u in uris]
    replace = bool(create.args.get("replace"))
    if_not_exists = bool(create.args.get("exists"))
    schema = [f"CREATE SCHEMA IF NOT EXISTS {name.split('.')[0]}"] if "." in name else []
    metadata = options.get("object_metadata")
    if metadata is not None:
        if str(metadata).upper() != "SIMPLE":
            raise SqlError(f"{where}: object_metadata={metadata!r} is not supported; use 'SIMPLE'")
        view = objects.object_table_sql(name, uris, replace=replace, if_not_exists=if_not_exists)
        return [*schema, view]
    fmt = str(options.get("format", "")).upper()
    if fmt not in objects.FORMAT_READERS:
        raise SqlError(
            f"{where}: needs object_metadata='SIMPLE' (an object table) or "
            f"format={'|'.join(repr(f) for f in objects.FORMAT_READERS)}"
        )
    return [*schema, objects.file_table_sql(name, uris, fmt, replace=replace, if_not_exists=if_not_exists)]


def translate_query(tree: exp.Expr, session: Session) -> str:
    """A query using ML.PREDICT / ML.DECODE_IMAGE -> DuckDB SQL (registering its UDFs)."""
    names.localize_tables(tree, names.attached_databases(session.con))
    preprocessing.rewrite(tree)
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
        threshold = _threshold(node.args.get("params_struct"), where)
        source = node.expression
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
        placeholder = f"__inferline_ml_predict_slot_{i}"
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
        holder = node.parent if isinstance(node.parent, exp.Table) else node
        alias = holder.args.get("alias") if holder is not node else None
        holder.replace(exp.Table(this=exp.to_identifier(placeholder), alias=alias))
    if tables:  # after the probes above, which read the CTEs as written
        for cte in tree.find_all(exp.CTE):
            batching.sort_object_scans(cte.this, tables, shadowed)
    _zero_based_offsets(tree, replacements)
    sql = tree.sql("duckdb")
    for placeholder, subquery in replacements.items():
        sql = sql.replace(placeholder, subquery)
    return sql


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


def _require_column(session: Session, ctes_sql: str, inner_sql: str, label: str, where: str) -> None:
    try:
        columns = list(session.con.sql(f"{ctes_sql} SELECT * FROM ({inner_sql}) LIMIT 0").columns)
    except duckdb.Error as exc:
        raise SqlError(f"{where}: the input subquery fails: {str(exc).splitlines()[0]}") from None
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
