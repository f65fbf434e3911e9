"""What the commands that build no model load: ``import`` and its workers read, decode and write
without torch, whose import is most of a worker's start-up. The kit's stems and heads are
registered deferred and still build real modules."""

import subprocess
import sys

IMPORT_PATH = """
import sys
from hpt_kit.models import builtins

names = []

class Collect:
    def add(self, name, builder):
        names.append((name, builder))

builtins.hpt_register_stems(Collect())
builtins.hpt_register_heads(Collect())
import hpt_kit.data.fanout, hpt_kit.data.importing, hpt_kit.weights.locations
import hpt_kit_lerobot.importer, hpt_kit_rlds.importer, hpt_kit_robomimic
print(len(names), sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""


def test_the_import_path_and_the_stem_registry_load_no_torch():
    out = subprocess.run([sys.executable, "-c", IMPORT_PATH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "[]"], out.stdout


def test_a_deferred_builder_builds_the_real_module_and_shows_its_signature():
    import inspect

    import torch

    from hpt_kit.core.spec import StemSpec
    from hpt_kit.models.builtins import Deferred
    from hpt_kit.models.hpt import _accepts
    from hpt_kit.models.stems import MlpStem

    resnet = Deferred("hpt_kit.models.stem_image", "build_resnet_stem")
    mlp = Deferred("hpt_kit.models.stems", "build_mlp_stem")
    assert "pretrained" in inspect.signature(resnet).parameters
    assert _accepts(resnet, "pretrained") and not _accepts(mlp, "pretrained")
    stem = mlp(StemSpec("state", hidden=(32,), num_tokens=4, num_heads=4), (7,), 16, 2)
    assert isinstance(stem, MlpStem)
    assert stem(torch.zeros(3, 2, 7)).shape == (3, 4, 16)
    assert repr(mlp) == "hpt_kit.models.stems:build_mlp_stem"


def test_tfrecord_imported_after_the_rlds_decoder_keeps_one_example_message():
    code = (
        "import sys, hpt_kit_rlds.decode as d; assert 'torch' not in sys.modules; import tfrecord; "
        "from tfrecord import example_pb2; print(d.example_pb2 is example_pb2, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
