"""Hugging Face model folders written by `save_pretrained` (config + weights + tokenizer), local only.

What the folder holds decides the task (or `task:` in the spec), as `transformers` pipelines do:

- `*ForSequenceClassification` -> text classification: prediction = the `id2label` label,
  scores = softmax over the logits (the model says it is a classifier);
- `*ForImageClassification` -> image classification over (n, C, H, W) pixels (an images
  source with `layout: NCHW` and the processor's `mean`/`std`);
- anything else -> feature extraction: the mean of the last hidden state over the tokens
  (an embedding per row, raw).

Text models take one string column (`inputs: [review]`; `text` by default), tokenised per
batch with padding. Nothing is downloaded: `local_files_only=True` and `HF_HUB_OFFLINE=1`.
Weights in `model.safetensors` hold no code; `pytorch_model.bin` is a pickle, so it loads only
from trusted paths. Runs on torch.

Example:
    >>> handler = HuggingFaceHandler(task="text-classification")
    >>> model = handler.load("models/sentiment/")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline.errors import ModelError, require
from inferline.models.base import Prediction, ensure_trusted, is_remote_uri
from inferline.models.layout import standard_layout
from inferline.models.outputs import from_probabilities, probabilities
from inferline.models.torch import pick_device

TASKS = ("text-classification", "feature-extraction", "image-classification")
TEXT_INPUT = "text"


@dataclass
class HuggingFaceModel:
    task: str
    network: Any
    tokenizer: Any | None
    labels: np.ndarray | None
    device: str


class HuggingFaceHandler:
    """Runs a `save_pretrained` folder on whole batches with `transformers` on torch.

    Example:
        >>> HuggingFaceHandler().framework
        'huggingface'
    """

    framework = "huggingface"

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        device: str = "cpu",
        scores: bool = True,
        task: str | None = None,
        max_length: int = 512,
    ) -> None:
        self.batch_size = batch_size
        self.device = device
        self.scores = scores
        self.task = task
        self.max_length = max_length
        self.parallel_batches = 1

    def load(self, uri: str) -> HuggingFaceModel:
        if is_remote_uri(uri):
            raise ModelError(
                f"model {uri}: Hugging Face models load from local folders only; copy the folder "
                "written by save_pretrained next to the pipeline"
            )
        path = uri.removeprefix("file://")
        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            raise ModelError(f"model {uri}: not a Hugging Face model folder (no config.json)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        transformers: Any = require("transformers", "huggingface")
        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar per load
        torch: Any = require("torch", "huggingface")
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        task = self.task or task_of(config)
        if task not in TASKS:
            raise ModelError(
                f"model {uri}: task {task!r} is not supported; expected one of {', '.join(TASKS)}"
            )
        if not os.path.exists(os.path.join(path, "model.safetensors")):
            ensure_trusted(uri, what="pickled Hugging Face checkpoint (pytorch_model.bin)")
        device = pick_device(torch, self.device, uri)
        auto = {
            "text-classification": transformers.AutoModelForSequenceClassification,
            "image-classification": transformers.AutoModelForImageClassification,
            "feature-extraction": transformers.AutoModel,
        }[task]
        try:
            network = auto.from_pretrained(path, local_files_only=True).to(device).eval()
            tokenizer = (
                None
                if task == "image-classification"
                else transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            )
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            raise ModelError(f"model {uri}: cannot load Hugging Face model ({reason})") from exc
        labels = None
        if task != "feature-extraction":
            id2label = network.config.id2label
            labels = np.array([id2label[i] for i in range(len(id2label))], dtype=object)
        return HuggingFaceModel(task, network, tokenizer, labels, device)

    def input_names(self, model: HuggingFaceModel) -> list[str]:
        """Text models read one string column, `text` unless `inputs:` names another."""
        return [TEXT_INPUT] if model.tokenizer is not None else []

    def text_inputs(self, model: HuggingFaceModel) -> list[str]:
        return [TEXT_INPUT] if model.tokenizer is not None else []

    def predict(self, model: HuggingFaceModel, inputs: np.ndarray) -> Prediction:
        torch: Any = require("torch", "huggingface")
        with torch.inference_mode():
            if model.tokenizer is None:
                pixels = torch.from_numpy(standard_layout(inputs, np.float32, writable=True)).to(model.device)
                output = model.network(pixel_values=pixels)
            else:
                texts = [_text(v) for v in np.asarray(inputs, dtype=object).reshape(len(inputs), -1)[:, 0]]
                encoded = model.tokenizer(
                    texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(model.device)
                output = model.network(**encoded)
            if model.task == "feature-extraction":
                hidden = output.last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                embedding = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
                return Prediction(prediction=embedding.float().cpu().numpy())
            logits = output.logits.float().cpu().numpy()
        return from_probabilities(probabilities(logits), model.labels, scores=self.scores)


def task_of(config: dict[str, Any]) -> str:
    """The task a saved config's architecture implies."""
    architectures = config.get("architectures") or []
    name = str(architectures[0]) if architectures else ""
    if name.endswith("ForSequenceClassification"):
        return "text-classification"
    if name.endswith("ForImageClassification"):
        return "image-classification"
    return "feature-extraction"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
