"""Every shipped example config loads, and its header carries the command that launches it."""

from pathlib import Path

import pytest

from tunetext import load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_are_example_configs():
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_loads_and_names_its_launch_command(path):
    config = load_config(path)
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    launch = ("# Launch: tunetext train --config", "# Launch: tunetext search --config")
    assert any(line.startswith(launch) and path.name in line for line in header)
    assert config.model.name
