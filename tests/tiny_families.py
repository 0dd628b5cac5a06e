"""Tiny random models of the families that `tests/conftest.py` has no fixture for (RoBERTa, XLM-RoBERTa,
MPNet, ELECTRA, DistilBERT, Qwen2, Mistral), built offline from a config as the BERT, GPT-2 and Llama
fixtures are: 2 blocks, hidden 32, a vocabulary of the tiny data's words, each with a tokenizer of its
family's kind and special tokens, saved as a pretrained checkpoint is (no classification head).

`build(name, path, words, bpe_from)` writes one into `path`; `words` is the tiny data's vocabulary and
`bpe_from` the tiny GPT-2's folder, whose byte-level BPE the RoBERTa and decoder tokenizers reuse.
"""

from __future__ import annotations

import json
from pathlib import Path

ENCODER_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=130)  # RoBERTa's positions start after its pad id
# Attention dropout on, as the tiny Llama's, for the tests of where dropout applies.
DECODER_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=128, attention_dropout=0.1)


def _byte_bpe(bpe_from: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The tiny GPT-2's byte-level BPE vocabulary and merges."""
    model = json.loads((bpe_from / "tokenizer.json").read_text())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _roberta_tokenizer(words: list[str], bpe_from: Path):
    from transformers import RobertaTokenizerFast

    vocab, merges = _byte_bpe(bpe_from)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's order: <pad> is id 1
    ordered = specials + [t for t in sorted(vocab, key=vocab.get) if t not in specials]
    return RobertaTokenizerFast(vocab={t: i for i, t in enumerate(ordered)}, merges=merges)


def _xlm_roberta_tokenizer(words: list[str], bpe_from: Path):
    from transformers import XLMRobertaTokenizerFast

    # A Unigram (sentencepiece-style) vocabulary, cased as XLM-R's is: whole words after the word-start
    # marker, as written in the tiny data, and every character alone as a fallback.
    cased = sorted({v for w in words for v in (w, w.capitalize(), w.upper())})
    chars = sorted({c for w in cased for c in w})
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{w}", -5.0) for w in cased] + [(c, -10.0) for c in chars] + [("\u2581", -10.0)]
    pieces.append(("<mask>", 0.0))
    return XLMRobertaTokenizerFast(vocab=pieces)


def _wordpiece_tokenizer(cls_name: str, words: list[str], specials: list[str], **kwargs):
    import transformers

    vocab = specials + [w for w in words if w not in specials]
    return getattr(transformers, cls_name)(vocab={w: i for i, w in enumerate(vocab)}, **kwargs)


def _decoder_tokenizer(bpe_from: Path, pad: str | None, eos: str):
    """The tiny GPT-2's tokenizer with `eos` as end-of-text and `pad` as pad token (None: no pad token, as
    Mistral ships)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bpe_from)
    new = [t for t in (eos, pad) if t is not None and t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new})
    tokenizer.eos_token = eos
    tokenizer.pad_token = pad
    return tokenizer


def build(name: str, path: Path, words: list[str], bpe_from: Path) -> Path:
    """A tiny random model of family `name` (a `config.model_type`) and its tokenizer, saved in `path`."""
    import torch
    import transformers as tf

    path.mkdir(parents=True, exist_ok=True)
    bert_specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if name == "roberta":
        tokenizer = _roberta_tokenizer(words, bpe_from)
    elif name == "xlm-roberta":
        tokenizer = _xlm_roberta_tokenizer(words, bpe_from)
    elif name == "mpnet":
        tokenizer = _wordpiece_tokenizer("MPNetTokenizerFast", words,
                                         ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"])
    elif name in ("electra", "distilbert"):
        cls_name = {"electra": "ElectraTokenizerFast", "distilbert": "DistilBertTokenizerFast"}[name]
        tokenizer = _wordpiece_tokenizer(cls_name, words, bert_specials)
    elif name == "qwen2":  # as Qwen2-Instruct: pads with <|endoftext|>, ends a turn with <|im_end|>
        tokenizer = _decoder_tokenizer(bpe_from, pad="<|endoftext|>", eos="<|im_end|>")
    elif name == "mistral":  # no pad token, as Mistral ships
        tokenizer = _decoder_tokenizer(bpe_from, pad=None, eos="<|endoftext|>")
    else:
        raise ValueError(f"no tiny builder for {name!r}")
    tokenizer.save_pretrained(path)

    torch.manual_seed(0)
    specials = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id)
    if name in ("qwen2", "mistral"):
        config_class = {"qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig}[name]
        config = config_class(vocab_size=len(tokenizer), **DECODER_SIZES, **specials)
        tf.AutoModelForCausalLM.from_config(config).save_pretrained(path)
        return path
    if name == "distilbert":
        config = tf.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    elif name == "electra":  # embeddings narrower than the blocks, as ELECTRA's are, so it has a projection
        config = tf.ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, **ENCODER_SIZES,
                                  pad_token_id=tokenizer.pad_token_id)
    else:
        config = tf.AutoConfig.for_model(name, vocab_size=len(tokenizer), **ENCODER_SIZES, **specials)
    tf.AutoModel.from_config(config).save_pretrained(path)  # the base model: the head is new at load time
    return path
