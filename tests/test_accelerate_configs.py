"""Every shipped accelerate config (configs/accelerate/) loads with accelerate's own parser, names only
options that `accelerate launch` knows, and carries its launch command in its header."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

FOLDER = Path(__file__).parents[1] / "configs" / "accelerate"
EXPECTED = {"multi_gpu.yaml": (DistributedType.MULTI_GPU, 1, 4),
            "multi_node.yaml": (DistributedType.MULTI_GPU, 2, 8),
            "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 1, 4),
            "fsdp.yaml": (DistributedType.FSDP, 1, 4)}


def test_the_folder_holds_the_documented_configs():
    assert sorted(p.name for p in FOLDER.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_parser(name):
    path = FOLDER / name
    config = load_config_from_file(str(path))  # raises on a key accelerate does not know
    kind, machines, processes = EXPECTED[name]
    assert (config.distributed_type, config.num_machines, config.num_processes) == (kind, machines, processes)
    # the deepspeed_/fsdp_ sections become `accelerate launch` options: each must be one it has
    options = {action.dest for action in launch_command_parser()._actions}
    assert set(config.deepspeed_config) | set(config.fsdp_config) <= options
    if kind == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    launch = [line for line in header if f"accelerate launch --config_file configs/accelerate/{name}" in line]
    assert launch and all("-m tunetext.cli train" in line for line in launch)
