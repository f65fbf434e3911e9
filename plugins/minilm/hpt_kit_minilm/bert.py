"""A BERT encoder (post-norm transformer, absolute positions, exact GELU), enough to run a published
BERT checkpoint such as MiniLM-L6-H384 for inference.

Tensor names inside the module are short; :data:`CHECKPOINT_NAMES` maps them to the names of the
published ``model.safetensors`` and :func:`load_bert` loads every tensor strictly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(Path(path).read_text())
        if raw.get("model_type") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(
                f"{path}: expected a BERT config with hidden_act 'gelu', got {raw.get('model_type')!r}"
            )
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


class BertLayer(nn.Module):
    """Self-attention then an MLP, each followed by a residual add and LayerNorm (post-norm)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        width = cfg.hidden_size
        assert width % cfg.num_attention_heads == 0
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attention_out = nn.Linear(width, width)
        self.attention_norm = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(width, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, width)
        self.output_norm = nn.LayerNorm(width, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (
            f(x).view(B, T, self.heads, D // self.heads).transpose(1, 2)
            for f in (self.query, self.key, self.value)
        )
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :]
        )  # (B, heads, T, D / heads)
        x = self.attention_norm(x + self.attention_out(a.transpose(1, 2).reshape(B, T, D)))  # (B, T, D)
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))  # (B, T, D)


class Bert(nn.Module):
    """Token ids (B, T) and a mask (B, T), True on real tokens -> last hidden states (B, T, D)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.words = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.positions = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.segments = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embedding_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = (
            self.words(ids) + self.positions(positions)[None] + self.segments(torch.zeros_like(ids))
        )  # (B, T, D)
        x = self.embedding_norm(x)
        for layer in self.layers:
            x = layer(x, mask)
        return x


# Our parameter name -> the published checkpoint's ("{i}" is the layer index).
CHECKPOINT_NAMES = {
    "words.weight": "embeddings.word_embeddings.weight",
    "positions.weight": "embeddings.position_embeddings.weight",
    "segments.weight": "embeddings.token_type_embeddings.weight",
    "embedding_norm.weight": "embeddings.LayerNorm.weight",
    "embedding_norm.bias": "embeddings.LayerNorm.bias",
    **{
        f"layers.{{i}}.{ours}.{p}": f"encoder.layer.{{i}}.{theirs}.{p}"
        for ours, theirs in [
            ("query", "attention.self.query"),
            ("key", "attention.self.key"),
            ("value", "attention.self.value"),
            ("attention_out", "attention.output.dense"),
            ("attention_norm", "attention.output.LayerNorm"),
            ("intermediate", "intermediate.dense"),
            ("output", "output.dense"),
            ("output_norm", "output.LayerNorm"),
        ]
        for p in ("weight", "bias")
    },
}
UNUSED = ("embeddings.position_ids", "pooler.")  # in the checkpoint, not needed for hidden states


def load_bert(folder: Path) -> Bert:
    """``config.json`` + ``model.safetensors`` (no pickle) from ``folder``; a missing, unexpected or
    mis-shaped tensor is an error naming it."""
    folder = Path(folder)
    model = Bert(BertConfig.from_json(folder / "config.json"))
    tensors = load_file(str(folder / "model.safetensors"))
    state = {}
    for name in model.state_dict():
        parts = name.split(".")
        key = ".".join(["{i}" if p.isdigit() else p for p in parts])
        index = next((p for p in parts if p.isdigit()), "")
        state[name] = CHECKPOINT_NAMES[key].replace("{i}", index)
    missing = sorted(theirs for theirs in state.values() if theirs not in tensors)
    unexpected = sorted(k for k in set(tensors) - set(state.values()) if not k.startswith(UNUSED))
    if missing or unexpected:
        raise ValueError(
            f"{folder / 'model.safetensors'}: missing tensors {missing}, unexpected tensors {unexpected}"
        )
    model.load_state_dict({ours: tensors[theirs] for ours, theirs in state.items()}, strict=True)
    return model.eval()
