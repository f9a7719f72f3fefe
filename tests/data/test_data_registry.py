"""The benchmark datasets are wired end to end: registry, `data prepare` choices, layout hints."""

import re

import pytest

from fgvc.cli import build_parser
from fgvc.data import DATASETS, aircraft, cars, download, flowers, nabirds
from fgvc.data.base import LAYOUT_HINT


def _prepare_choices(capsys) -> set[str]:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "prepare", "--help"])
    return set(re.search(r"\{([a-z0-9_,]+)\}", capsys.readouterr().out).group(1).split(","))


def test_every_preparable_name_is_a_cli_choice_and_a_dataset(capsys):
    names = set(download.NAMES) | set(download.MANUAL)
    assert _prepare_choices(capsys) == names
    assert names <= set(DATASETS)


def test_benchmark_names_map_to_their_loaders():
    assert DATASETS["aircraft"] is aircraft.load and DATASETS["cars"] is cars.load
    assert DATASETS["nabirds"] is nabirds.load and DATASETS["flowers102"] is flowers.load
    assert {"aircraft", "cars", "nabirds", "flowers"} <= set(LAYOUT_HINT)
