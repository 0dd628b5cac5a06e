"""GPT-2 from scratch, for sequence classification: every line of the model you fine-tune.

The architecture is OpenAI's GPT-2 (Radford et al. 2019), written in the manner of Karpathy's nanoGPT:
token and position embeddings, then `n_layer` pre-norm blocks (LayerNorm -> causal self-attention ->
residual, LayerNorm -> MLP -> residual), then a final LayerNorm. The classifier reads the hidden state of
each text's last real token, the only position that has seen the whole text.

Parameter names and shapes are those of transformers' `GPT2ForSequenceClassification`, so Hugging Face
GPT-2 checkpoints load into it and what `save_pretrained` writes loads back into transformers. The
linear layers inside blocks are `Conv1D`: OpenAI stored their weights as [in, out], and checkpoints
still do. `tests/test_gpt.py` checks the outputs against transformers' GPT-2 to 1e-5.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tunetext.errors import UsageError
from tunetext.models.families import ModelError, pooled_positions

log = logging.getLogger(__name__)


class Conv1D(nn.Module):
    """A linear layer with its weight stored as [in, out] (`x @ weight + bias`), as GPT-2 checkpoints are."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx: int, sdpa: bool):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)  # query, key and value in one matmul
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.scale = 1 / math.sqrt(config.n_embd // config.n_head) if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:  # a GPT-2 option (off in OpenAI's checkpoints)
            self.scale /= layer_idx + 1
        self.sdpa = sdpa

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """`allowed[b, 0, i, j]` says whether position i may attend to position j."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # B T C -> B nh T hs: each head attends with its own hs = C / nh slice of the channels.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:  # PyTorch's fused kernel: the same maths, faster on GPU
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale,
                                               dropout_p=self.attn_dropout.p if self.training else 0.0)
        else:
            att = (q @ k.transpose(-2, -1)) * self.scale
            att = F.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1)
            y = self.attn_dropout(att) @ v
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(config.n_embd, inner)
        self.c_proj = Conv1D(inner, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2's GELU is the tanh approximation ("gelu_new" in transformers).
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config, layer_idx: int, sdpa: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx, sdpa)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), allowed)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """The GPT-2 backbone: token ids -> one hidden state per position."""

    def __init__(self, config, sdpa: bool = False):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # learned position embeddings
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i, sdpa) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        for emb in (self.wte, self.wpe):
            nn.init.normal_(emb.weight, std=config.initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        if self.wpe.num_embeddings < T:
            raise UsageError(f"{T} tokens, but this GPT-2 has positions for {self.wpe.num_embeddings}; "
                             f"lower model.max_length")
        positions = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))
        # Causal: position i sees positions 0..i. Padding: nobody sees a pad token. With right padding a
        # real token never sees a later pad anyway; the mask keeps pad positions from attending to pads.
        allowed = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]  # B 1 T T
            # A query with nothing to attend to (in an all-pad row) would softmax to 0/0 = NaN, and NaN
            # spreads through the loss. Let it attend everywhere instead, as transformers does in effect
            # (its masked scores are the lowest finite value); no real token reads that output.
            allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
        for block in self.h:
            x = block(x, allowed)
        return self.ln_f(x)


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # B num_labels


class GPT2Classifier(nn.Module):
    """GPT-2 with a linear head on each text's last non-pad token, like `GPT2ForSequenceClassification`.

    `config` is a transformers `GPT2Config` (with `num_labels`, `id2label` and `pad_token_id`).
    """

    base_model_prefix = "transformer"

    def __init__(self, config, attention: str = "eager"):
        super().__init__()
        unsupported = {"activation_function": config.activation_function != "gelu_new",
                       "add_cross_attention": config.add_cross_attention}
        if any(unsupported.values()):
            found = ", ".join(f"{k}={getattr(config, k)!r}" for k, bad in unsupported.items() if bad)
            raise ModelError(f"tunetext.models.gpt implements GPT-2 as OpenAI released it; this config sets "
                             f"{found}")
        self.config = config
        self.transformer = GPT2(config, sdpa=attention == "sdpa")
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=config.initializer_range)

    @property
    def base_model(self) -> GPT2:
        return self.transformer

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> ClassifierOutput:
        hidden = self.transformer(input_ids, attention_mask)
        # The rightmost token that is not padding, as transformers picks it; without a pad token, the last.
        last = pooled_positions(input_ids, self.config.pad_token_id)
        pooled = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
        return ClassifierOutput(logits=self.score(pooled))

    @classmethod
    def from_pretrained(cls, path: str | Path, attention: str = "eager",
                        **config_overrides) -> GPT2Classifier:
        """Load a Hugging Face GPT-2 folder (base model, LM head model or sequence classifier).

        `config_overrides` (`num_labels`, `id2label`, `label2id`, `pad_token_id`) go to `GPT2Config`.
        A checkpoint without a classification head gets a fresh one.
        """
        from transformers import GPT2Config

        model = cls(GPT2Config.from_pretrained(path, **config_overrides), attention)
        state = read_checkpoint(Path(path))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"score.weight"}:
            raise ModelError(f"{path} does not hold GPT-2 weights this model can use: missing "
                             f"{sorted(missing) or 'nothing'}; unexpected {sorted(unexpected) or 'nothing'}")
        if missing:
            log.debug("%s has no classification head; starting a new one with %d labels", path,
                      model.config.num_labels)
        return model

    def save_pretrained(self, path: str | Path) -> None:
        """Write `config.json` and `model.safetensors` that transformers loads as a
        `GPT2ForSequenceClassification` (and tunetext with either implementation)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.architectures = ["GPT2ForSequenceClassification"]
        self.config.save_pretrained(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The weights in a Hugging Face GPT-2 folder, named as in `GPT2Classifier`.

    OpenAI-era checkpoints name backbone weights without the `transformer.` prefix and carry the causal
    mask as buffers (`attn.bias`, `attn.masked_bias`); an LM head is tied to `wte`. Those are dropped.
    """
    from safetensors.torch import load_file

    if (path / "model.safetensors").is_file():
        state = load_file(path / "model.safetensors")
    elif (path / "model.safetensors.index.json").is_file():  # sharded
        shards = set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values())
        state = {k: v for shard in sorted(shards) for k, v in load_file(path / shard).items()}
    elif (path / "pytorch_model.bin").is_file():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ModelError(f"{path} has no model.safetensors or pytorch_model.bin")
    out = {}
    for key, value in state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key.startswith("lm_head."):
            continue
        out[key if key.startswith(("transformer.", "score.")) else "transformer." + key] = value
    return out
