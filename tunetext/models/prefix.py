"""Running a classifier in two parts: a frozen prefix, whose output can be cached, and the top.

Under `last_n` the embeddings and the first `n_frozen` blocks never change and run in eval mode (see
`families.train_mode`), so their output for a text is a fixed function of that text. `encode_prefix`
computes it; `forward_top` runs the rest of the model from it and returns the logits the whole model would.
Each pair mirrors the `forward` of one transformers class, mask construction and pooling included, so
they are keyed by that class rather than by model type (tunetext's scratch GPT-2 is model type gpt2
too, and has no split here). The block calls follow transformers 5, where a layer returns a tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunetext.models.families import ModelError, pooled_positions


class PrefixCacheUnsupported(ModelError):
    """This model has no prefix/top split; training runs the whole model every step instead."""


def _bert_mask(base: Any, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask)


def _bert_blocks(hidden: torch.Tensor, mask: Any, layers) -> torch.Tensor:
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


def _bert_prefix(model, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    hidden = base.embeddings(input_ids=input_ids)
    return _bert_blocks(hidden, _bert_mask(base, hidden, attention_mask), base.encoder.layer[:n_frozen])


def _one_query_attention(query: torch.Tensor, hidden: torch.Tensor, key: tuple[torch.Tensor, torch.Tensor],
                         value: tuple[torch.Tensor, torch.Tensor], seen: torch.Tensor, scaling: float,
                         dropout: nn.Module) -> torch.Tensor:
    """Attention of one query per row and head over every token of `hidden`, without projecting the tokens
    into keys and values: `[batch, heads, head_size]` from `query` `[batch, heads, head_size]`, `hidden`
    `[batch, tokens, hidden]`, `key` and `value` as (weight `[heads, head_size, hidden]`, bias
    `[heads, head_size]`) and `seen` `[batch, tokens]`, the tokens the query may attend to.

    For head h with key weights K_h, key bias k_h and query q_h, the score of token t is
    q_h . (K_h x_t + k_h) = (K_h^T q_h) . x_t + q_h . k_h: the query is projected back into the hidden space
    once instead of every token into key space (q_h . k_h is the same for every token and the softmax
    cancels it, as it does in the block). Likewise the output sum_t p_t (V_h x_t + v_h) =
    V_h (sum_t p_t x_t) + (sum_t p_t) v_h mixes the hidden states first and projects one vector per head
    (the p do not sum to 1 where dropout zeroed some). The attention's sums in another order: the same
    numbers up to float rounding, for a fraction of the work when there is one query per text.
    """
    (key_weight, key_bias), (value_weight, value_bias) = key, value
    query_back = torch.einsum("bnd,ndh->bnh", query, key_weight)  # K_h^T q_h: [batch, heads, hidden]
    scores = torch.einsum("bnh,bth->bnt", query_back, hidden)
    scores = (scores + (query * key_bias).sum(-1, keepdim=True)) * scaling
    scores = scores.masked_fill(~seen[:, None, :], torch.finfo(scores.dtype).min)
    probs = dropout(scores.softmax(-1))  # [batch, heads, tokens]
    context = torch.einsum("bnh,ndh->bnd", torch.einsum("bnt,bth->bnh", probs, hidden), value_weight)
    return context + probs.sum(-1, keepdim=True) * value_bias


def _bert_layer_at_cls(layer: Any, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`layer(hidden, mask)[:, :1]`, computing only that: the pooler reads nothing else from the last block.
    The [CLS] query attends without projecting the tokens (`_one_query_attention`), and the feed-forward,
    two thirds of a block, runs on [CLS] alone."""
    attn = layer.attention.self
    batch, heads, size = hidden.shape[0], attn.num_attention_heads, attn.attention_head_size
    query = attn.query(hidden[:, 0]).view(batch, heads, size)
    key, value = ((proj.weight.view(heads, size, -1), proj.bias.view(heads, size))
                  for proj in (attn.key, attn.value))
    context = _one_query_attention(query, hidden, key, value, attention_mask.bool(), attn.scaling,
                                   attn.dropout)
    cls = layer.attention.output(context.reshape(batch, 1, heads * size), hidden[:, :1])
    return layer.output(layer.intermediate(cls), cls)


def _bert_top(model, hidden, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    top = list(base.encoder.layer[n_frozen:])
    if len(top) > 1:
        hidden = _bert_blocks(hidden, _bert_mask(base, hidden, attention_mask), top[:-1])
    if top:
        hidden = _bert_layer_at_cls(top[-1], hidden, attention_mask)
    return model.classifier(model.dropout(base.pooler(hidden)))  # [CLS] -> pooler -> dropout -> head


def _decoder_pooled(model: Any, input_ids: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`pooled_positions` of a transformers decoder classifier, on `device`."""
    return pooled_positions(input_ids, model.config.get_text_config().pad_token_id).to(device)


def _gpt2_blocks(base, hidden, attention_mask, layers) -> torch.Tensor:
    from transformers.masking_utils import create_causal_mask

    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, position_ids=positions)
    for block in layers:
        hidden = block(hidden, None, mask, None, use_cache=False, position_ids=positions)
    return hidden


def _gpt2_prefix(model, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    # Positions 0..T-1: with right padding those of each unpadded text, as in GPT2Model.
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    hidden = base.drop(base.wte(input_ids) + base.wpe(positions))
    return _gpt2_blocks(base, hidden, attention_mask, base.h[:n_frozen])


def _gpt2_block_at(block: Any, hidden: torch.Tensor, attention_mask: torch.Tensor,
                   at: torch.Tensor) -> torch.Tensor:
    """`block(hidden, ...)` at one position per row (`at`), `[batch, 1, hidden]`, computing only that: the
    head reads nothing else from the last block. That token's query attends to the tokens it sees (causal,
    and not padding) without projecting them (`_one_query_attention`: GPT-2's positions are added to the
    embeddings, so keys are a plain projection); the feed-forward runs at that token alone."""
    attn, (batch, length) = block.attn, hidden.shape[:2]
    heads, size, width = attn.num_heads, attn.head_dim, attn.embed_dim
    rows = torch.arange(batch, device=hidden.device)
    normed = block.ln_1(hidden)
    # c_attn is a Conv1D, x @ W + b, whose columns are the query, key and value projections side by side.
    weights, biases = attn.c_attn.weight.split(width, dim=1), attn.c_attn.bias.split(width)
    query = (normed[rows, at] @ weights[0] + biases[0]).view(batch, heads, size)
    key, value = ((weights[i].t().view(heads, size, -1), biases[i].view(heads, size)) for i in (1, 2))
    seen = (torch.arange(length, device=hidden.device) <= at[:, None]) & attention_mask.bool()
    context = _one_query_attention(query, normed, key, value, seen, attn.scaling, attn.attn_dropout)
    out = hidden[rows, at, None] + attn.resid_dropout(attn.c_proj(context.reshape(batch, 1, width)))
    return out + block.mlp(block.ln_2(out))


def _gpt2_top(model, hidden, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    top = base.h[n_frozen:]
    at = _decoder_pooled(model, input_ids, hidden.device)
    if not top:
        return model.score(base.ln_f(hidden))[torch.arange(len(at), device=at.device), at]
    if len(top) > 1:
        hidden = _gpt2_blocks(base, hidden, attention_mask, top[:-1])
    hidden = _gpt2_block_at(top[-1], hidden, attention_mask, at)
    return model.score(base.ln_f(hidden))[:, 0]  # the last block ran at the pooled token only


def _llama_blocks(base, hidden, attention_mask, layers) -> torch.Tensor:
    from transformers.masking_utils import create_causal_mask

    # Rotary positions 0..T-1 for every row: with right padding, those of each unpadded text.
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, position_ids=positions)
    rotary = base.rotary_emb(hidden, position_ids=positions)
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
    return hidden


def _llama_prefix(model, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    return _llama_blocks(base, base.embed_tokens(input_ids), attention_mask, base.layers[:n_frozen])


def _llama_layer_at(layer: Any, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor],
                    attention_mask: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """`layer(hidden, ...)` at one position per row (`at`), `[batch, 1, hidden]`, computing only that: the
    query of that token against the keys and values of every token it sees (causal, and not padding),
    then the output projection and the feed-forward at that token alone. The head reads nothing else from
    the last layer, and the feed-forward is most of a layer's work. Eager attention, as transformers'."""
    from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

    attn, (batch, length) = layer.self_attn, hidden.shape[:2]
    rows = torch.arange(batch, device=hidden.device)
    normed = layer.input_layernorm(hidden)
    query = attn.q_proj(normed[rows, at]).view(batch, -1, 1, attn.head_dim)
    key, value = (proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
                  for proj in (attn.k_proj, attn.v_proj))
    cos, sin = rotary  # [1, length, head_dim]: positions 0..length-1
    query = query * cos[0, at, None, None] + rotate_half(query) * sin[0, at, None, None]
    key = key * cos[:, None] + rotate_half(key) * sin[:, None]
    key, value = (repeat_kv(x, attn.num_key_value_groups) for x in (key, value))
    scores = torch.matmul(query, key.transpose(2, 3)) * attn.scaling  # [batch, heads, 1, length]
    seen = (torch.arange(length, device=hidden.device) <= at[:, None]) & attention_mask.bool()
    scores = scores.masked_fill(~seen[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=attn.attention_dropout, training=attn.training)
    context = torch.matmul(probs, value).transpose(1, 2).reshape(batch, 1, -1)
    out = hidden[rows, at, None] + attn.o_proj(context)
    return out + layer.mlp(layer.post_attention_layernorm(out))


def _llama_top(model, hidden, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    layers = base.layers[:base.config.num_hidden_layers][n_frozen:]
    at = _decoder_pooled(model, input_ids, hidden.device)
    if not layers:
        return model.score(base.norm(hidden))[torch.arange(len(at), device=at.device), at]
    if len(layers) > 1:
        hidden = _llama_blocks(base, hidden, attention_mask, layers[:-1])
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    hidden = _llama_layer_at(layers[-1], hidden, base.rotary_emb(hidden, position_ids=positions),
                             attention_mask, at)
    return model.score(base.norm(hidden))[:, 0]  # the last layer ran at the pooled token only


_PREFIX_SPLITS = {
    "BertForSequenceClassification": (_bert_prefix, _bert_top),
    "GPT2ForSequenceClassification": (_gpt2_prefix, _gpt2_top),
    "LlamaForSequenceClassification": (_llama_prefix, _llama_top),
}


def prefix_split(model: Any):
    """`(encode, top)` for this model's class; `PrefixCacheUnsupported` says why there is none."""
    name = type(model).__name__
    split = _PREFIX_SPLITS.get(name)
    if split is None:
        raise PrefixCacheUnsupported(
            f"{name} cannot run from cached hidden states yet (supported: {', '.join(_PREFIX_SPLITS)}), so "
            f"the frozen prefix runs at every step, uncached")
    if getattr(model.config, "is_decoder", False) and name == "BertForSequenceClassification":
        raise PrefixCacheUnsupported("a BERT configured as a causal decoder (is_decoder=true) cannot run "
                                     "from cached hidden states, so the frozen prefix runs at every step")
    return split


def encode_prefix(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  n_frozen: int) -> torch.Tensor:
    """Hidden states after the embeddings and the first `n_frozen` blocks, `[batch, length, hidden]`.
    Run it under `torch.no_grad()` with the prefix in eval mode (`train_mode`) to get what the whole
    model computes there."""
    return prefix_split(model)[0](model, input_ids, attention_mask, n_frozen)


def forward_top(model: Any, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                n_frozen: int) -> torch.Tensor:
    """Logits from `hidden`, the output of `encode_prefix`: blocks `n_frozen:`, final norm, pooling, head.

    `input_ids` only locate the padding (decoders pool the last non-pad token, as transformers does).
    Hidden states at padded positions may hold any finite values, zeros included: no real token reads
    them (encoders mask them as keys; decoders are causal and padded on the right).
    """
    return prefix_split(model)[1](model, hidden, input_ids, attention_mask, n_frozen)
