"""Object tables: BigQuery's `CREATE EXTERNAL TABLE ... OPTIONS(object_metadata='SIMPLE')`.

An object table is a DuckDB view over `read_blob(uris)` with BigQuery's columns
`uri, generation, content_type, size, md5_hash, updated, metadata, data`. DuckDB pushes
the projection into `read_blob`, so file contents are read only when `data` (or
`md5_hash`) is selected. Local paths are stored absolute; other URIs (s3://, gs://,
memory://, ...) are read through fsspec filesystems registered on the connection.
"""

from __future__ import annotations

import os
import re

import duckdb

from inferline.errors import MissingExtraError, SqlError
from inferline.io.duckdb import quote
from inferline.io.objects import CONTENT_TYPES

# Filesystems DuckDB reads itself; anything else goes through fsspec.
_NATIVE = ("file",)
_PROTOCOL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

# For the file readers BigQuery's external tables name by `format`.
FORMAT_READERS: dict[str, str] = {
    "CSV": "read_csv",
    "PARQUET": "read_parquet",
    "NEWLINE_DELIMITED_JSON": "read_json",
    "JSON": "read_json",
}


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def normalize_uri(uri: str) -> str:
    """Local paths become absolute (the view must work from any directory); URIs stay."""
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if _PROTOCOL.match(uri):
        return uri
    return os.path.abspath(uri)


def register_filesystems(con: duckdb.DuckDBPyConnection, uris: list[str]) -> None:
    """Make fsspec URIs readable by DuckDB on this connection."""
    import fsspec

    for uri in uris:
        match = _PROTOCOL.match(uri)
        if match is None or match.group(1) in _NATIVE:
            continue
        protocol = match.group(1)
        try:
            fs = fsspec.filesystem(protocol)
        except ImportError as exc:
            module = getattr(exc, "name", None) or protocol
            raise MissingExtraError(module, "gcp" if protocol in ("gs", "gcs") else "all") from exc
        except ValueError as exc:
            raise SqlError(f"object table uri {uri}: unknown protocol {protocol!r} ({exc})") from exc
        if not con.filesystem_is_registered(
            fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        ):
            con.register_filesystem(fs)


def restore_filesystems(con: duckdb.DuckDBPyConnection) -> None:
    """On connect: register the filesystems the database's object tables read from."""
    rows = con.execute("SELECT sql FROM duckdb_views() WHERE sql LIKE '%read_blob%'").fetchall()
    uris = [m.group(0) for (sql,) in rows for m in re.finditer(r"'([a-zA-Z][a-zA-Z0-9+.-]*)://", sql)]
    register_filesystems(con, [u.strip("'") for u in uris])


def _content_type() -> str:
    cases = " ".join(f"WHEN {sql_string(ext)} THEN {sql_string(ct)}" for ext, ct in CONTENT_TYPES.items())
    return f"CASE lower(regexp_extract(filename, '\\.([^./]+)$', 1)) {cases} END"


def _create_view(name: str, *, replace: bool, if_not_exists: bool) -> str:
    if replace:
        return f"CREATE OR REPLACE VIEW {quote(name)}"
    return f"CREATE VIEW {'IF NOT EXISTS ' if if_not_exists else ''}{quote(name)}"


def object_table_sql(name: str, uris: list[str], *, replace: bool, if_not_exists: bool) -> str:
    """The view that is the object table `name` over `uris` (globs allowed)."""
    files = "[" + ", ".join(sql_string(u) for u in uris) + "]"
    return (
        f"{_create_view(name, replace=replace, if_not_exists=if_not_exists)} AS SELECT "
        "filename AS uri, "
        "CAST(epoch_us(last_modified) AS BIGINT) AS generation, "
        f"{_content_type()} AS content_type, "
        "size, "
        "md5(content) AS md5_hash, "
        "CAST(last_modified AS TIMESTAMP) AS updated, "
        "CAST([] AS STRUCT(name VARCHAR, value VARCHAR)[]) AS metadata, "
        "content AS data "
        f"FROM read_blob({files})"
    )


def file_table_sql(name: str, uris: list[str], fmt: str, *, replace: bool, if_not_exists: bool) -> str:
    """A BigQuery external table over data files (CSV, Parquet, JSON lines) as a view."""
    reader = FORMAT_READERS[fmt]
    files = "[" + ", ".join(sql_string(u) for u in uris) + "]"
    view = _create_view(name, replace=replace, if_not_exists=if_not_exists)
    return f"{view} AS SELECT * FROM {reader}({files})"


def signed_url_sql(uri_column: str) -> str:
    """BigQuery's signed URL for an object, locally: a `file://` URL for a local path (percent-
    encoded), the URI itself for other filesystems (nothing to sign)."""
    return (
        f"CASE WHEN starts_with({uri_column}, '/') "
        f"THEN 'file://' || replace(url_encode({uri_column}), '%2F', '/') ELSE {uri_column} END"
    )


def rewrite_object_transforms(text: str) -> str:
    """`EXTERNAL_OBJECT_TRANSFORM(TABLE t, ['SIGNED_URL'])` (BigQuery SQL, which sqlglot cannot
    parse) -> `(SELECT *, <file:// URL> AS signed_url FROM t)`."""
    if "external_object_transform" not in text.lower():
        return text
    import sqlglot
    from sqlglot.tokenizer_core import TokenType

    tokens = list(sqlglot.tokenize(text, read="bigquery"))
    edits: list[tuple[int, int, str]] = []
    for i, token in enumerate(tokens):
        if token.text.upper() != "EXTERNAL_OBJECT_TRANSFORM" or i + 2 >= len(tokens):
            continue
        close = next(
            (k for k in range(i + 1, len(tokens)) if tokens[k].token_type == TokenType.R_PAREN), None
        )
        comma = next((k for k in range(i + 1, len(tokens)) if tokens[k].token_type == TokenType.COMMA), None)
        usage = "EXTERNAL_OBJECT_TRANSFORM takes TABLE object_table and ['SIGNED_URL']"
        if close is None or comma is None or comma > close or tokens[i + 2].token_type != TokenType.TABLE:
            raise SqlError(usage)
        name = text[tokens[i + 3].start : tokens[comma - 1].end + 1]
        kinds = [t.text.upper() for t in tokens[comma + 1 : close] if t.token_type == TokenType.STRING]
        if kinds != ["SIGNED_URL"]:
            raise SqlError(f"{usage}; got {text[tokens[comma + 1].start : tokens[close].start].strip()}")
        replacement = f"(SELECT *, {signed_url_sql('uri')} AS signed_url FROM {name})"
        edits.append((token.start, tokens[close].end + 1, replacement))
    for start, end, replacement in reversed(edits):
        text = text[:start] + replacement + text[end:]
    return text
