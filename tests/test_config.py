import json
import re

import pytest

from image_transformer import ImageTransformer, ImageTransformerConfig, SuperResolutionConfig
from image_transformer.files.checkpoint import CheckpointError


@pytest.mark.parametrize("field, value, wanted", [
    ("hidden_size", "big", "an int"), ("num_layers", 2.5, "an int"), ("dropout", "0.1", "a number"),
    ("attention", 1, "a string"), ("image_size", "28", "an int or a pair of ints"),
    ("query_shape", [8, "16"], "an int or a pair of ints"), ("num_classes", True, "an int"),
])
def test_a_value_of_the_wrong_type_is_refused_by_name(field, value, wanted):
    with pytest.raises(ValueError, match=re.escape(f"{field} must be {wanted}, got {value!r}")):
        ImageTransformerConfig(**{field: value})


def test_ints_for_floats_and_lists_for_pairs_are_accepted():
    cfg = ImageTransformerConfig(dropout=0, image_size=[4, 6], query_shape=2)
    assert cfg.image_size == (4, 6) and cfg.query_shape == (2, 2) and cfg.dropout == 0


def test_super_resolution_config_names_the_field():
    with pytest.raises(ValueError, match="hidden_size must be an int, got 'big'"):
        SuperResolutionConfig(image_size=(8, 8), input_size=(4, 4), hidden_size="big")


def test_bad_type_in_config_json_names_the_file_and_field(tmp_path):
    ImageTransformer(ImageTransformerConfig(image_size=(3, 3), hidden_size=8, num_layers=1, num_heads=2,
                                            ffn_size=8)).save_pretrained(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    record["config"]["hidden_size"] = "big"
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"config\.json: bad model config: .*hidden_size must be an int, "
                                              r"got 'big' \(str\)"):
        ImageTransformer.from_pretrained(tmp_path)


@pytest.mark.parametrize("value, size", [(8, (8, 8)), ((8, 16), (8, 16)), ([2, 3], (2, 3)), ("8x16", (8, 16)),
                                         ("8", (8, 8)), ("3X4", (3, 4))])
def test_one_size_parser_for_ints_pairs_and_text(value, size):
    from image_transformer.images import parse_size

    assert parse_size(value) == size


def test_the_size_parser_names_what_is_wrong():
    from image_transformer.images import parse_size

    with pytest.raises(ValueError, match=r"expected ROWSxCOLS such as 8x16 \(or one number for a square\), got 'a'"):
        parse_size("a")
    with pytest.raises(ValueError, match="input_size must be an int or a pair of ints, got 1.5"):
        parse_size(1.5, "input_size")
    with pytest.raises(ValueError, match="size must be positive, got 0x3"):
        parse_size((0, 3), positive=True)
    assert parse_size((0, 3)) == (0, 3)  # configs report ranges themselves, with every other problem


def test_configuration_errors_are_typed():
    from image_transformer.nn.config import ConfigError
    from image_transformer.training.config import TrainConfig

    with pytest.raises(ConfigError, match="hidden_size"):
        ImageTransformerConfig(hidden_size="big")
    with pytest.raises(ConfigError, match="lr must be positive"):
        TrainConfig(lr=0)
    assert issubclass(ConfigError, ValueError)  # the command line's one-line errors
