"""Small TensorFlow SavedModels and TFLite files built in tests (no downloads)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # TensorFlow imports Keras: keep ours on torch
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As models/tensorflow.py sets it: TensorFlow then imports no Keras (and no torch), ~4.5 s CPU less.
if importlib.util.find_spec("tf_keras") is None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CLASSES = 4


class ImageClassifier(tf.Module):  # type: ignore[misc]
    """NHWC RGB images of any size -> per-channel means and spatial contrast -> 4 class probabilities."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = tf.Variable(rng.normal(size=(6, CLASSES)).astype(np.float32) * 4)
        self.b = tf.Variable(rng.normal(size=(CLASSES,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="image")])
    def serve(self, image: Any) -> dict[str, Any]:
        means = tf.reduce_mean(image, axis=[1, 2])
        spread = tf.math.reduce_std(image, axis=[1, 2])
        logits = tf.matmul(tf.concat([means, spread], axis=1), self.w) + self.b
        return {"probabilities": tf.nn.softmax(logits), "feature_vector": tf.concat([means, spread], axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="image")])
    def embed(self, image: Any) -> dict[str, Any]:
        return {
            "feature_vector": tf.concat(
                [tf.reduce_mean(image, axis=[1, 2]), tf.reduce_max(image, axis=[1, 2])], 1
            )
        }


class PriceModel(tf.Module):  # type: ignore[misc]
    """Three named inputs, one of them text: price = 2*rooms + 0.01*area + (10 if city == 'paris')."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 1], tf.float32, name="rooms"),
            tf.TensorSpec([None, 1], tf.float32, name="area"),
            tf.TensorSpec([None, 1], tf.string, name="city"),
        ]
    )
    def serve(self, rooms: Any, area: Any, city: Any) -> dict[str, Any]:
        paris = tf.cast(tf.equal(city, "paris"), tf.float32) * 10.0
        return {"price": 2.0 * rooms + 0.01 * area + paris}


class ResNetStandIn(tf.Module):  # type: ignore[misc]
    """The BigQuery ResNet 50 tutorial's signature: `input_1` [-1, 224, 224, 3] -> `activation_49`
    [-1, 1024] (the tutorial's shapes), from per-channel means and contrast, not ImageNet weights."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(1)
        self.w = tf.Variable(rng.normal(size=(6, 1024)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="input_1")])
    def serve(self, input_1: Any) -> dict[str, Any]:
        means, spread = tf.reduce_mean(input_1, axis=[1, 2]), tf.math.reduce_std(input_1, axis=[1, 2])
        features = tf.concat([means, spread], 1)
        return {"activation_49": tf.nn.softmax(tf.matmul(features, self.w) * 8)}


def save_resnet_stand_in(path: Path) -> Any:
    module = ResNetStandIn()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


class DenseClassifier(tf.Module):  # type: ignore[misc]
    """Four features -> Dense(16) -> ReLU -> 3 class probabilities (tabular, TFLite-convertible)."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(3)
        self.w1 = tf.Variable(rng.normal(size=(4, 16)).astype(np.float32))
        self.w2 = tf.Variable(rng.normal(size=(16, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def serve(self, features: Any) -> dict[str, Any]:
        return {"probabilities": tf.nn.softmax(tf.matmul(tf.nn.relu(tf.matmul(features, self.w1)), self.w2))}


class ClassesAndEmbedding(tf.Module):  # type: ignore[misc]
    """Four features -> 3 class probabilities and a 2-number embedding: a classifier with two
    outputs (a tf.Module: Keras in the test process runs on torch, which TFLite cannot convert)."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(5)
        self.w1 = tf.Variable(rng.normal(size=(4, 8)).astype(np.float32))
        self.w2 = tf.Variable(rng.normal(size=(8, 3)).astype(np.float32))
        self.w3 = tf.Variable(rng.normal(size=(8, 2)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def serve(self, features: Any) -> dict[str, Any]:
        hidden = tf.nn.relu(tf.matmul(features, self.w1))
        return {
            "probabilities": tf.nn.softmax(tf.matmul(hidden, self.w2)),
            "embedding": tf.matmul(hidden, self.w3),
        }


def save_classes_and_embedding(path: Path) -> Any:
    module = ClassesAndEmbedding()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def save_dense_classifier(path: Path) -> Any:
    module = DenseClassifier()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def save_image_classifier(path: Path) -> Any:
    module = ImageClassifier()
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve, "embed": module.embed}
    )
    return module


def save_price_model(path: Path) -> Any:
    module = PriceModel()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module


def save_tflite(saved_model: Path, path: Path) -> None:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    path.write_bytes(converter.convert())


def signature_outputs(
    saved_model: Path, signature: str = "serving_default", **inputs: np.ndarray
) -> dict[str, np.ndarray]:
    """What TensorFlow's own signature call answers."""
    loaded = tf.saved_model.load(str(saved_model))
    result = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in result.items()}


def interpreter_outputs(tflite: Path, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    """What LiteRT's own interpreter answers, through the model's signature runner."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite))
    runner = interpreter.get_signature_runner("serving_default")
    return {k: np.array(v) for k, v in runner(**inputs).items()}
