"""ML.PREDICT over `(SELECT ..., ML.DECODE_IMAGE(data) AS image ...)`: decode and model overlap.

DuckDB runs a small query's UDF calls one after another on one thread: `decode_image` on a
chunk, then the model on it. Decoding tiny images is Python-level Pillow work that holds the
GIL while a model call releases it, so when the model's input column is the subquery's
`decode_image(blob[, height, width])`, the ML.PREDICT UDF takes the blob instead and, within
each chunk, decodes the next slice of images while the model runs on the previous one (on
one worker thread, torch on one thread meanwhile). It returns the decoded images as the
column too, so DuckDB does not decode them twice. Values, NULLs and error messages are those
of the two calls; images that are not tiny (decoded on all cores by `decode_image`), models
that take a chunk in one call (scikit-learn, remote) and chunks of images of different sizes
take the unfused path.

Native statements get the same through `fuse_native_calls`: `predict(m, decode_image(...))`
becomes `__inferline_predict_decoding(m, blob, h, w)` (sql/functions.py). 5,000 28x28 PNGs,
digits CNN: ML.PREDICT 0.42 s -> 0.26 s, native predict 0.40 s -> 0.24 s (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import TokenType, exp

from inferline.models.base import LoadedModel, Prediction
from inferline.sql import calls
from inferline.sql.decode import (
    Job,
    chunk_jobs,
    decode_column,
    decode_threads,
    images_to_arrow,
    pixels,
    scale,
)
from inferline.sql.tensors import model_layout

BLOB, HEIGHT, WIDTH = "__inferline_blob", "__inferline_height", "__inferline_width"
PARAM = f"STRUCT({BLOB} BLOB, {HEIGHT} INTEGER, {WIDTH} INTEGER)"
PACKED = "{" + ", ".join(f"'{name}': {name}" for name in (BLOB, HEIGHT, WIDTH)) + "}"

Chunk = Callable[[pa.Array], pa.Array]
Outputs = Callable[[Prediction, np.ndarray], list[pa.Array]]
RunModel = Callable[..., Prediction]
# predict(m, decode_image(...)) and the others -> a UDF that decodes itself (see fuse_native_calls).
NATIVE = ("predict", "predict_scores", "predict_label")


@dataclass(frozen=True)
class DecodedInput:
    """A subquery column that is `decode_image(...)`, and the subquery selecting its arguments instead."""

    column: str
    sql: str

    def columns(self, columns: list[str]) -> list[str]:
        """The subquery's columns with the decoded one replaced by the hidden arguments."""
        index = columns.index(self.column)
        return [*columns[:index], BLOB, HEIGHT, WIDTH, *columns[index + 1 :]]


def decoded_inputs(inner: exp.Expr) -> dict[str, DecodedInput]:
    """The plain SELECT's `decode_image(blob[, h, w]) AS name` columns (translated ML.DECODE_IMAGE)."""
    if not isinstance(inner, exp.Select):
        return {}
    if any(inner.args.get(key) for key in ("distinct", "group", "having", "qualify", "windows")):
        return {}
    names = [e.alias_or_name for e in inner.expressions]
    found: dict[str, DecodedInput] = {}
    for index, projection in enumerate(inner.expressions):
        call = projection.this if isinstance(projection, exp.Alias) else None
        resized = _resized_decode(call)
        if resized is not None:
            call = resized[0]
        if not isinstance(call, exp.Anonymous) or call.name.lower() != "decode_image":
            continue
        args = list(call.expressions)
        if resized is not None and len(args) != 1:
            continue
        name = projection.alias_or_name
        if len(args) not in (1, 3) or names.count(name) != 1 or name in (BLOB, HEIGHT, WIDTH):
            continue
        if any(a.find(exp.AggFunc, exp.Window, exp.Star) is not None for a in args):
            continue
        rest = inner.copy()
        rest.set("expressions", [e for i, e in enumerate(rest.expressions) if i != index])
        if any(c.name.lower() == name.lower() for c in rest.find_all(exp.Column)):
            continue  # WHERE/ORDER BY image: the alias must stay
        sizes = args[1:] if len(args) == 3 else [exp.Literal.number(0), exp.Literal.number(0)]
        if resized is not None:  # negative sizes: decode, then resize as resize_image (sql/decode.py)
            sizes = [exp.Literal.number(-resized[1]), exp.Literal.number(-resized[2])]
        hidden = [
            exp.alias_(exp.cast(args[0].copy(), "BLOB"), BLOB),
            exp.alias_(exp.cast(sizes[0].copy(), "INTEGER"), HEIGHT),
            exp.alias_(exp.cast(sizes[1].copy(), "INTEGER"), WIDTH),
        ]
        query = inner.copy()
        query.set("expressions", [*query.expressions[:index], *hidden, *query.expressions[index + 1 :]])
        found[name] = DecodedInput(column=name, sql=query.sql("duckdb"))
    return found


def _resized_decode(call: exp.Expr | None) -> tuple[exp.Anonymous, int, int] | None:
    """`resize_image(decode_image(blob), h, w, FALSE)` with literal sizes: (the decode call, h, w)."""
    if not isinstance(call, exp.Anonymous) or call.name.lower() != "resize_image":
        return None
    args = list(call.expressions)
    if len(args) not in (3, 4) or not isinstance(args[0], exp.Anonymous):
        return None
    if len(args) == 4 and not (isinstance(args[3], exp.Boolean) and not args[3].this):
        return None
    sizes = [a for a in args[1:3] if isinstance(a, exp.Literal) and not a.is_string and a.this.isdigit()]
    if len(sizes) != 2 or min(int(a.this) for a in sizes) < 1:
        return None
    return args[0], int(sizes[0].this), int(sizes[1].this)


def predict_decoding(
    loaded: LoadedModel,
    unfused: Chunk,
    outputs: Outputs,
    result: pa.StructType,
    run_model: RunModel,
    where: str,
) -> Chunk:
    """The UDF body: a struct of (blob, height, width) -> a `result` struct (outputs, then images).

    `unfused` is the ML.PREDICT body on a one-field struct of decoded images; `outputs` turns
    a chunk's prediction and its valid rows into the output arrays.
    """
    field = result.field(result.num_fields - 1)

    def with_images(predicted: pa.Array, images: pa.Array) -> pa.Array:
        if predicted.null_count == len(predicted) and len(predicted):
            return pa.nulls(len(predicted), result)
        arrays = [predicted.field(i) for i in range(predicted.type.num_fields)]
        return pa.StructArray.from_arrays([*arrays, images], fields=list(result))

    def run(packed: pa.Array) -> pa.Array:
        blobs, heights, widths = (packed.field(i) for i in range(3))
        jobs = chunk_jobs(blobs, heights, widths)
        if not fusable(loaded, jobs):
            images = decode_column(blobs, heights, widths)
            return with_images(unfused(pa.StructArray.from_arrays([images], fields=[field])), images)
        decoded: list[np.ndarray | None] = [None] * len(packed)
        parts = decode_and_predict(loaded, jobs, decoded, run_model, where)
        images = images_to_arrow(decoded)
        if parts is None:  # images of different sizes (or none): the unfused path answers
            return with_images(unfused(pa.StructArray.from_arrays([images], fields=[field])), images)
        valid = np.array([image is not None for image in decoded], dtype=bool)
        prediction = concatenate(parts)
        return pa.StructArray.from_arrays([*outputs(prediction, valid), images], fields=list(result))

    return run


def fusable(loaded: LoadedModel, jobs: list[Job]) -> bool:
    """Whether a chunk decodes in the model's call: small images (decoded on one thread) for a
    model that takes them in slices; otherwise the chunk is decoded first, as unfused."""
    return decode_threads(jobs) == 1 and loaded.handler.framework in calls.SLICED_FRAMEWORKS


def decode_and_predict(
    loaded: LoadedModel, jobs: list[Job], images: list[np.ndarray | None], run_model: RunModel, where: str
) -> list[Prediction] | None:
    """Decode `jobs` into `images` slice by slice, each slice predicted while the next decodes.

    None when there is nothing to predict or the images differ in size (all are decoded first,
    so a bad image is reported as `decode_image` reports it).
    """
    if not jobs:
        return None
    first = pixels(jobs[0][1], height=jobs[0][2], width=jobs[0][3], row=jobs[0][0])
    shape = first.shape
    step = calls.slice_rows(np.broadcast_to(np.float32(0), (len(jobs), *shape)), loaded.handler.framework)
    full = (len(jobs), *model_layout(np.broadcast_to(np.float32(0), (1, *shape)), loaded).shape[1:])
    if step >= len(jobs):  # one model call: nothing to overlap
        decoded = _decode(jobs, first, images)
        if any(image.shape != shape for image in decoded):
            return None
        return [run_model(loaded, model_layout(_floats(decoded), loaded), where=where)]
    futures: list[Future[Prediction]] = []
    same = True
    with ThreadPoolExecutor(1, thread_name_prefix="inferline-sql-model") as pool:
        try:
            with calls.udf_call():  # while decoding, torch calls on the model thread take one thread
                for start in range(0, len(jobs), step):
                    decoded = _decode(jobs[start : start + step], first if start == 0 else None, images)
                    same = same and all(image.shape == shape for image in decoded)
                    if same:
                        tensor = model_layout(_floats(decoded), loaded)
                        futures.append(pool.submit(run_model, loaded, tensor, where=where, shape=full))
            if not same:
                return None
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()


def concatenate(parts: list[Prediction]) -> Prediction:
    """The predictions of consecutive slices as one."""
    return Prediction.concat(parts)


def _decode(part: list[Job], first: np.ndarray | None, images: list[np.ndarray | None]) -> list[np.ndarray]:
    """Decode a slice of jobs (its first already decoded when `first` is given) into `images`."""
    decoded = [
        first if first is not None and i == 0 else pixels(blob, height=h, width=w, row=row)
        for i, (row, blob, h, w) in enumerate(part)
    ]
    for (row, *_), image in zip(part, decoded, strict=True):
        images[row] = image
    return decoded


def _floats(images: list[np.ndarray]) -> np.ndarray:
    """Same-shaped stored pixels -> one float32 (n, h, w, c) array, as `decode` scales each."""
    if all(image.dtype == np.uint8 for image in images):
        return scale(np.stack(images))
    return np.stack([scale(image) for image in images])


def fuse_native_calls(text: str) -> str:
    """`predict(m, decode_image(blob[, h, w]))` (and predict_scores/predict_label) in a DuckDB
    statement -> `__inferline_predict_decoding(m, blob, h, w)`, which decodes as it predicts.

    Only a call whose whole second argument is a `decode_image(...)` call is rewritten; the
    rest of the text is left as written (found on sqlglot's tokens: strings and comments are
    not calls). Text that does not tokenize is returned as is.
    """
    if "decode_image" not in text.lower():
        return text
    try:
        tokens = sqlglot.tokenize(text, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return text
    spans: list[tuple[int, int, str]] = []
    for i, token in enumerate(tokens):
        name = token.text.lower()
        if name not in NATIVE or i + 1 >= len(tokens) or tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        if i > 0 and tokens[i - 1].token_type == TokenType.DOT:
            continue
        call = _native_call(text, tokens, i + 1)
        if call is not None:
            end, model, args = call
            sizes = "" if len(args) == 3 else ", 0, 0"
            spans.append(
                (token.start, end, f"__inferline_{name}_decoding({model}, {', '.join(args)}{sizes})")
            )
    for start, end, replacement in reversed(spans):
        text = text[:start] + replacement + text[end + 1 :]
    return text


def _native_call(text: str, tokens: list[Any], lparen: int) -> tuple[int, str, list[str]] | None:
    """(end of the call, model argument, decode_image's arguments) when the call's second and
    last argument is `decode_image(1 or 3 arguments)`."""
    comma = _next_at_depth(tokens, lparen + 1, (TokenType.COMMA, TokenType.R_PAREN))
    if comma is None or tokens[comma].token_type != TokenType.COMMA:
        return None
    decode = comma + 1
    if (
        decode + 1 >= len(tokens)
        or tokens[decode].text.lower() != "decode_image"
        or tokens[decode + 1].token_type != TokenType.L_PAREN
    ):
        return None
    args: list[str] = []
    start = decode + 2
    while True:
        stop = _next_at_depth(tokens, start, (TokenType.COMMA, TokenType.R_PAREN))
        if stop is None or stop == start:
            return None
        args.append(text[tokens[start].start : tokens[stop - 1].end + 1])
        if tokens[stop].token_type == TokenType.R_PAREN:
            break
        start = stop + 1
    close = stop + 1
    if len(args) not in (1, 3) or close >= len(tokens) or tokens[close].token_type != TokenType.R_PAREN:
        return None
    model = text[tokens[lparen + 1].start : tokens[comma - 1].end + 1] if comma > lparen + 1 else ""
    return (tokens[close].end, model, args) if model else None


def _next_at_depth(tokens: list[Any], start: int, kinds: tuple[Any, ...]) -> int | None:
    """The first token of `kinds` from `start` outside nested parentheses/brackets."""
    depth = 0
    for index in range(start, len(tokens)):
        kind = tokens[index].token_type
        if depth == 0 and kind in kinds:
            return index
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
            if depth < 0:
                return None
    return None
