import pytest
import torch

from tunetext.batches import collate, length_grouped_batches, sorted_batches, tokenize, tokenize_marking_cuts


def test_collate_pads_on_the_right_and_masks_the_padding():
    batch = collate([[5, 6, 7], [8], [9, 10]], pad_id=0, labels=[1, 0, 1])
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 0, 0], [9, 10, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([1, 0, 1]))
    assert {t.dtype for t in batch.values()} == {torch.long}


def test_collate_keeps_a_pad_id_that_is_also_a_real_token():
    batch = collate([[2, 2], [2]], pad_id=2)  # GPT-2 pads with its end-of-text token, which texts contain
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1], [1, 0]]))
    assert "labels" not in batch


def test_every_text_lands_in_exactly_one_batch():
    lengths = [3, 9, 1, 7, 7, 2, 8, 4, 6, 5]
    for batches in (length_grouped_batches(lengths, 3, seed=0, window=2), sorted_batches(lengths, 3)):
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) <= 3 for b in batches)
    assert [lengths[b[0]] for b in sorted_batches(lengths, 3)] == [9, 7, 4, 1]


@pytest.fixture
def word_tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)  # [CLS] words [SEP]: a text of n words is n + 2 tokens


class _PythonTokenizer:
    """The tokenizer, answering as a pure-Python one does: without the Rust `encodings`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        from transformers import BatchEncoding

        return BatchEncoding(dict(self.tokenizer(*args, **kwargs)))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("rust", [True, False])
def test_tokenize_marking_cuts_marks_exactly_the_texts_longer_than_the_window(word_tokenizer, side, rust):
    word_tokenizer.truncation_side = side
    texts = ["ok " * n for n in (1, 3, 4, 5, 9)]  # 3, 5, 6, 7 and 11 tokens: the third fills a window of 6
    ids, cut = tokenize_marking_cuts(word_tokenizer if rust else _PythonTokenizer(word_tokenizer), texts, 6,
                                     "say {text}")
    assert ids == tokenize(word_tokenizer, texts, 6, "say {text}")
    assert [len(seq) for seq in ids] == [4, 6, 6, 6, 6]
    assert cut == [False, False, True, True, True]
    ids, cut = tokenize_marking_cuts(word_tokenizer, texts, 6)
    assert [len(seq) for seq in ids] == [3, 5, 6, 6, 6] and cut == [False, False, False, True, True]
    assert tokenize_marking_cuts(word_tokenizer, [], 6) == ([], [])
