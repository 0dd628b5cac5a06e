"""The one typed configuration tree of tunetext.

`schema` declares the sections and every default (and nowhere else are they declared); `load` reads a
tree with a fixed precedence: defaults, then a YAML file, then command-line `key=value` overrides, and
reports every problem at once, each naming the field, the value it got and what to do about it.
"""

from tunetext.config.load import (
    SECTIONS,
    dump_config,
    load_config,
    parse_overrides,
    parse_value,
    search_space_problems,
    with_overrides,
)
from tunetext.config.schema import (
    TEXT_FIELD,
    AuditConfig,
    CategoricalParam,
    ConfigError,
    DataConfig,
    FloatParam,
    IntParam,
    ModelConfig,
    RunConfig,
    SearchConfig,
    TrainConfig,
    check_template,
)

__all__ = [
    "AuditConfig",
    "CategoricalParam",
    "ConfigError",
    "DataConfig",
    "FloatParam",
    "IntParam",
    "ModelConfig",
    "RunConfig",
    "SECTIONS",
    "SearchConfig",
    "TEXT_FIELD",
    "TrainConfig",
    "check_template",
    "dump_config",
    "load_config",
    "parse_overrides",
    "parse_value",
    "search_space_problems",
    "with_overrides",
]
