"""An image stem whose ImageNet weights cannot be fetched: the error gives the command-line spelling
that trains without them, for the dataset whose stem asked."""

from hpt_kit.core.recipe import DatasetEntry, Recipe
from hpt_kit.core.spec import ActionSpec, EmbodimentData, ImageSpec, ObservationSpec, StemSpec
from hpt_kit.train.setup import _weights_hint


def spec(name, stems):
    return EmbodimentData(name, ObservationSpec(3, image=ImageSpec(("front",), 8, 8)), ActionSpec(2, (-1, -1), (1, 1), 10.0), stems)


def test_the_hint_names_the_dataset_and_the_set_spelling():
    recipe = Recipe(datasets=(DatasetEntry("arm"), DatasetEntry("cam")))
    specs = {
        "arm": spec("arm", (StemSpec("state"), StemSpec("image", kind="resnet", options={"weights": "none"}))),
        "cam": spec("cam", (StemSpec("state"), StemSpec("image", kind="resnet"))),  # imagenet, the stem's default
    }
    hint = _weights_hint(recipe, specs)
    assert "--set datasets[1].stem_options.image.weights=none" in hint and 'weights = "none"' in hint
    assert _weights_hint(Recipe(datasets=(DatasetEntry("arm"),)), specs) == ""
