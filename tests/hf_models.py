"""Tiny random Hugging Face models built from configs and saved with `save_pretrained`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import BertConfig, BertTokenizerFast

WORDS = ["good", "bad", "great", "awful", "film", "plot", "the", "was", "a", "very"]


# torch and transformers are imported in the functions: test modules import WORDS at collection.


def _tokenizer(folder: Path) -> BertTokenizerFast:
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def _bert_config(**extra: object) -> BertConfig:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        **extra,
    )


def save_sentiment(folder: Path) -> None:
    """A text classifier with labels NEGATIVE/POSITIVE, weights random (seeded)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = _tokenizer(folder)
    config = _bert_config(
        num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def save_encoder(folder: Path) -> None:
    """A sentence encoder (feature extraction)."""
    import torch
    from transformers import BertModel

    torch.manual_seed(1)
    tokenizer = _tokenizer(folder)
    BertModel(_bert_config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def save_image_classifier(folder: Path) -> None:
    """A ViT over 16x16 RGB images with labels circle/square/cross."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(2)
    config = ViTConfig(
        image_size=16,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label={0: "circle", 1: "square", 2: "cross"},
        label2id={"circle": 0, "square": 1, "cross": 2},
    )
    ViTForImageClassification(config).save_pretrained(folder)
