"""The transformers adapter on a tiny BERT (random weights) and word-piece tokenizer saved here, offline."""

from pathlib import Path

import numpy as np
import pytest

from inference.adapters import transformers as adapter
from inference.errors import InferenceError

WORDS = ["there", "is", "a", "no", "large", "right", "pneumothorax", "effusion", "."]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(path))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(str(path))
    return path


def test_embeddings_are_unit_length_and_independent_of_padding(tiny_model: Path) -> None:
    encoder = adapter.load(tiny_model)
    texts = ["There is a large right pneumothorax.", "No effusion.", "There is no pneumothorax."]

    together = adapter.predict(encoder, texts)
    alone = np.concatenate([adapter.predict(encoder, [t]) for t in texts])

    assert together.shape == (3, 16) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # The attention mask keeps padding out of the mean: a text embeds the same in any batch.
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_arrays_are_refused(tiny_model: Path) -> None:
    with pytest.raises(InferenceError):
        adapter.predict(adapter.load(tiny_model), np.zeros((1, 4), dtype=np.float32))
