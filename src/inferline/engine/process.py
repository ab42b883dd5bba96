"""One batch through everything between source and sink: steps -> model(s) -> steps -> output.

The local engine calls this on each batch its predict workers take; the Beam translation
calls the same code inside `RunInference` (or on batched rows when there is no model), so
a spec's steps, hooks, labels and output mapping give the same rows on either engine.

Example:
    >>> processor = BatchProcessor.from_spec(spec)  # doctest: +SKIP
    >>> results, dead = processor(batch.data, batch.keys, [model])  # doctest: +SKIP
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from inferline.engine.output import OutputMapping
from inferline.engine.predict import RunColumns, results_for
from inferline.engine.steps import Step, StepFailed, apply_steps, build_steps
from inferline.io.base import DeadLetter, row_as_json
from inferline.models.base import LoadedModel
from inferline.models.hooks import ModelHooks
from inferline.pipeline import ModelSpec, PipelineSpec


@dataclass
class BatchProcessor:
    """A spec's processing around the model, ready to run on batches (open: steps compiled,
    hooks imported, label files read)."""

    before: list[Step] = field(default_factory=list)
    after: list[Step] = field(default_factory=list)
    hooks: list[ModelHooks | None] = field(default_factory=list)
    keep: list[str] | None = None
    output: OutputMapping | None = None
    pool: ThreadPoolExecutor | None = None
    # Each model's result columns and types, so failed batches keep the run's schema.
    columns: RunColumns = field(default_factory=RunColumns)

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> BatchProcessor:
        before, after = build_steps(spec.steps, origin=spec.origin)
        return cls(
            before=before,
            after=after,
            hooks=[model_hooks(m) for m in spec.all_models],
            keep=spec.keep,
            output=OutputMapping(spec.output, origin=spec.origin) if spec.output else None,
        )

    def __call__(
        self, data: pa.RecordBatch, keys: pa.Array, models: list[LoadedModel]
    ) -> tuple[pa.RecordBatch | None, list[DeadLetter]]:
        """Result rows (None when no row is left) and dead letters for one batch.

        A `map:` step that raises dead-letters the whole batch (stage `step`), as a failing
        hook does; bad rows, failing rows and failing hooks are handled in `results_for`.
        """
        dead: list[DeadLetter] = []
        if data.num_rows == 0:
            return None, dead
        hooks = self.hooks or [None] * len(models)
        try:
            out, out_keys = apply_steps(self.before, data, keys)
            if models and out.num_rows:
                results, model_dead = results_for(
                    models, hooks, out, out_keys, keep=self.keep, pool=self.pool, columns=self.columns
                )
                dead.extend(model_dead)
            else:
                results = passthrough(out, out_keys) if out.num_rows else None
            if results is not None and self.after:
                after, after_keys = apply_steps(
                    self.after, results.drop_columns(["key"]), results.column("key")
                )
                results = passthrough(after, after_keys)
        except StepFailed as exc:
            letters = [
                DeadLetter(str(keys[i]), row_as_json(data, i), str(exc), "step") for i in range(data.num_rows)
            ]
            return None, letters
        if results is None or not results.num_rows:
            return None, dead
        return (self.output.apply(results) if self.output else results), dead


def model_hooks(spec: ModelSpec) -> ModelHooks | None:
    """The opened hooks of a model spec (`handler:`, `labels:`, `top_k:`), or None."""
    if not (spec.handler or spec.labels or spec.top_k):
        return None
    hooks = ModelHooks(spec.handler, labels=spec.labels, top_k=spec.top_k, where=f"model {spec.name}")
    hooks.open()
    return hooks


def passthrough(data: pa.RecordBatch, keys: pa.Array) -> pa.RecordBatch:
    """Rows that no model saw: `key` then every column as it is."""
    schema = pa.schema([pa.field("key", keys.type), *data.schema])
    return pa.RecordBatch.from_arrays([keys, *data.columns], schema=schema)
