"""BigQuery-ML's DDL: CREATE MODEL (imported and remote models) and CREATE EXTERNAL TABLE.

The statements run here, at translation: a model is loaded to check it and written to the
catalog (sql/catalog.py); an external table becomes DuckDB views (sql/objects.py).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

import duckdb
from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from inferline.errors import InferlineError, SqlError
from inferline.models.base import LoadedModel
from inferline.sql import evaluate, objects, training
from inferline.sql.catalog import MODEL_TYPES, CatalogModel, get_model, put_model
from inferline.sql.names import table_name
from inferline.sql.resolver import ModelResolver, load_catalog_model
from inferline.sql.training import transform as training_transform

# model_class / model_params (JSON) are inferline's: a PyTorch state_dict needs its class.
MODEL_OPTIONS = ("model_type", "model_path", "model_class", "model_params", "input_label_cols")
REMOTE_OPTIONS = ("endpoint", "auth_env")
TABLE_OPTIONS = ("uris", "object_metadata", "format", "max_staleness", "metadata_cache_mode")


class Session(Protocol):
    con: duckdb.DuckDBPyConnection
    resolver: ModelResolver
    errors: list[InferlineError]


def strip_connection(text: str, tokens: list[Token]) -> str:
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
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return -float(node.this.this)
    if isinstance(node, (exp.Array, exp.Struct)):  # a STRUCT('label', 0.5) is a 2-list
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


def create_model(create: exp.Create, session: Session, *, query: str | None = None) -> None:
    """Register (import, remote) or train a model; `query` is the AS SELECT in DuckDB's SQL."""
    name = table_name(create.this)
    where = f"CREATE MODEL {name}"
    options, others = _options(create, where)
    inputs: list[str] = []
    outputs: list[str] = []
    output_types: list[str] = []
    remote = False
    transform: list[exp.Expr] = []
    for prop in others:
        if isinstance(prop, exp.RemoteWithConnectionModelProperty):
            remote = True
        elif isinstance(prop, exp.TransformModelProperty):
            transform = list(prop.expressions)
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
    if training.is_training(model_type):
        _create_trained(create, session, options, query, name, where, transform)
        return
    if transform:
        raise SqlError(
            f"{where}: TRANSFORM(...) applies to models trained here (CREATE MODEL ... AS SELECT); "
            "for an imported model, preprocess in the subquery of ML.PREDICT"
        )
    if create.expression is not None or (model_type and model_type not in MODEL_TYPES):
        importing = create.expression is not None and (not model_type or model_type in MODEL_TYPES)
        shown = "AS SELECT ..." if importing else f"model_type='{model_type}'"
        raise SqlError(
            f"{where}: training ({shown}) is not supported; trained here: "
            f"model_type={'|'.join(repr(t) for t in training.MODEL_TYPES)} AS SELECT ...; else train "
            f"in Python and import the file with model_type={'|'.join(repr(t) for t in MODEL_TYPES)} "
            "and model_path="
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


def _create_trained(
    create: exp.Create,
    session: Session,
    options: dict[str, Any],
    query: str | None,
    name: str,
    where: str,
    transform: list[exp.Expr],
) -> None:
    """`CREATE MODEL ... [TRANSFORM(...)] OPTIONS(model_type='linear_reg', ...) AS SELECT ...`
    (sql/training/)."""
    from inferline.models.store import default_store

    checked = training.parse_options(options, where)
    if query is None:
        raise SqlError(f"{where}: model_type='{checked.model_type}' trains on a query; add AS SELECT ...")
    replace = bool(create.args.get("replace"))
    if not replace and get_model(session.con, name) is not None:
        if create.args.get("exists"):
            return  # IF NOT EXISTS: keep the model as it is, train nothing
        raise SqlError(f"{where}: the model already exists; use CREATE OR REPLACE MODEL to retrain it")
    try:
        relation = session.con.sql(query)
        types = {c: str(t) for c, t in zip(relation.columns, relation.types, strict=True)}
        table = relation.to_arrow_table()
    except duckdb.Error as exc:
        raise SqlError(f"{where}: the training query fails: {str(exc).splitlines()[0]}") from None
    raw = table
    fitted: list[tuple[str, str]] = []
    portable = None
    keep = [c for c in (checked.label, checked.split_column) if c is not None]
    if transform:  # the TRANSFORM's outputs are the features (sql/training/transform.py)
        table, fitted = training_transform.apply(session.con, raw, transform, keep, where)
        # ML.PREDICT's input has no label: the saved TRANSFORM gives the features only.
        fitted = [(n, sql) for n, sql in fitted if n != checked.label]
        portable = training_transform.portable(fitted, types, keep)
    entry, held_out, summary = training.train(
        table, name, checked, session.resolver.store or default_store(), where, transform=portable
    )
    if transform:
        entry = dataclasses.replace(entry, transform=[[n, sql] for n, sql in fitted])
    put_model(session.con, entry, replace=True)
    metrics, rows = evaluate.metrics_table(name), evaluate.evaluation_table(name)
    if summary.get("evaluation") is not None:
        # ML.EVALUATE(MODEL m) without input gives the row worked out at training, as BigQuery.
        row = evaluate.result_row(summary["evaluation"])
        session.con.execute(f"CREATE OR REPLACE TABLE {metrics} AS SELECT * FROM {row}")
        session.con.execute(f"DROP TABLE IF EXISTS {rows}")
    else:  # kmeans, pca: ML.EVALUATE(MODEL m) evaluates these rows
        if transform:
            held_out = training_transform.original_rows(raw, held_out)
        session.con.register("__inferline_held_out", held_out)
        try:
            session.con.execute(f"CREATE OR REPLACE TABLE {rows} AS SELECT * FROM __inferline_held_out")
        finally:
            session.con.unregister("__inferline_held_out")
        session.con.execute(f"DROP TABLE IF EXISTS {metrics}")
    session.resolver.forget(name)


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


def is_external(create: exp.Create) -> bool:
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
