"""Every shipped example config loads, names a real model and data source, and its header carries a command
that launches it: one the CLI parses, whose overrides load with the file."""

import shlex
from pathlib import Path

import pytest

from tunetext import load_config
from tunetext.cli import build_parser
from tunetext.config import search_space_problems
from tunetext.data import BUILTIN
from tunetext.data.sources import FILE_SUFFIXES
from tunetext.models.loading import CATALOGUE

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_examples_of_training_and_of_searching():
    assert {_launch(path)[0] for path in CONFIGS} == {"train", "search"}


def _launch(path: Path) -> list[str]:
    """The argument list of the `# Launch: tunetext ...` line in the header."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("# Launch: tunetext ")]
    assert len(lines) == 1, f"{path.name}: one '# Launch: tunetext ...' line expected"
    return shlex.split(lines[0].removeprefix("# Launch: tunetext "))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_loads_and_its_launch_command_runs_it(path):
    args = build_parser().parse_args(_launch(path))
    assert args.command in ("train", "search")
    assert Path(args.config) == path.relative_to(ROOT)  # the command launches this very file
    assert args.output
    config = load_config(path, overrides=args.overrides)
    assert config == load_config(ROOT / args.config, overrides=args.overrides)

    assert config.model.name in CATALOGUE, f"{path.name}: model {config.model.name!r} is not in the catalogue"
    source = config.data.source
    assert source in BUILTIN or Path(source).suffix in FILE_SUFFIXES, (
        f"{path.name}: data {source!r} is neither a built-in dataset nor a file tunetext reads")
    if args.command == "search":
        assert config.search.space and search_space_problems(config.search.space, config) == []
    else:
        assert not config.search.space  # a train config with a space would be one launched the wrong way
