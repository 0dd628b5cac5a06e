"""Reading the configuration: defaults, then a YAML file, then command-line `key=value` overrides.

Every problem is reported at once, each naming the field, the value it got and what to do about it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import ValidationError

from tunetext.config.schema import (
    PARAM_SPEC,
    PARAM_TYPES,
    AuditConfig,
    CategoricalParam,
    ConfigError,
    FloatParam,
    IntParam,
    RunConfig,
    SearchConfig,
)

SECTIONS = ("data", "model", "train", "search", "audit")
# Keys a search may not vary: trials must see the same data and be scored by the same metric.
_UNSEARCHABLE_SECTIONS = ("data", "search", "audit")
_UNSEARCHABLE_KEYS = ("train.metric",)


def _format_errors(err: ValidationError, raw: dict[str, Any]) -> list[str]:
    problems = []
    for e in err.errors():
        loc, tag = e["loc"], None
        if loc[:2] == ("search", "space") and len(loc) > 3:
            loc, tag = loc[:3] + loc[4:], str(loc[3])  # drop the union tag pydantic puts in the location
        where = ".".join(str(p) for p in loc)
        value = _lookup(raw, loc)
        if e["type"] == "extra_forbidden" and tag is not None:
            fields = [f for f in PARAM_TYPES[tag].model_fields if f != "type"]
            problems.append(f"{where}: unknown key (value {value!r}); a {tag} parameter takes "
                            f"{', '.join(fields)}")
            continue
        if e["type"] == "extra_forbidden":
            section = str(e["loc"][0]) if len(e["loc"]) > 1 else None
            known = _known_keys(section)
            problems.append(f"{where}: unknown key (value {value!r}){_did_you_mean(str(e['loc'][-1]))}; "
                            f"known keys here are {', '.join(known)}")
            continue
        if not loc:  # a check across sections (RunConfig's): its message names the keys
            problems.append(e["msg"])
            continue
        problems.append(f"{where}: got {value!r}: {e['msg']}")
    return problems


def _known_keys(section: str | None) -> list[str]:
    if section in SECTIONS:
        return list(RunConfig.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
    return list(SECTIONS)


def _did_you_mean(name: str) -> str:
    """`"; did you mean train.epochs?"` for a misspelt or misplaced key, else `""`."""
    dotted = {k: f"{s}.{k}" for s in SECTIONS for k in _known_keys(s)}
    close = difflib.get_close_matches(name, list(dotted), n=1)
    return f"; did you mean {dotted[close[0]]}?" if close else ""


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        else:
            return "<missing>"
    return raw


# Only the numbers YAML 1.1 misses; "nan" or "inf" stay strings, as YAML reads them.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_value(text: str) -> Any:
    """Parse a command-line value the way YAML would (`3` -> 3, `null` -> None, `1e-4` -> 0.0001)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
        return float(value)  # YAML 1.1 reads "1e-4" as a string; YAML 1.2 and people read a number
    if value == "" and text.strip() in ("|", ">"):
        return text.strip()  # a block scalar with no lines to YAML; the character itself (a label separator)
    return value


def parse_overrides(items: list[str], problems: list[str]) -> dict[str, Any]:
    """`["train.epochs=5", ...]` -> `{"train.epochs": 5, ...}`; malformed items go to `problems`."""
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{item!r}: overrides are written key=value, e.g. train.epochs=5")
            continue
        pairs[key.strip()] = parse_value(text.strip())
    return pairs


def _set_override(tree: dict[str, Any], key: str, value: Any, problems: list[str]) -> None:
    parts = key.split(".")
    if len(parts) == 1:
        owners = [s for s in SECTIONS if key in _known_keys(s)]
        if len(owners) != 1:
            hint = f"write {' or '.join(f'{s}.{key}' for s in owners)}" if owners else \
                f"keys are SECTION.NAME with SECTION one of {', '.join(SECTIONS)}"
            what = "ambiguous key" if owners else f"unknown key (value {value!r}){_did_you_mean(key)}"
            problems.append(f"{key}: {what}; {hint}")
            return
        parts = [owners[0], key]
    if len(parts) != 2 or parts[0] not in SECTIONS:
        problems.append(f"{key}: unknown key; keys are SECTION.NAME with SECTION one of "
                        f"{', '.join(SECTIONS)}")
        return
    tree.setdefault(parts[0], {})
    if not isinstance(tree[parts[0]], dict):
        problems.append(f"{parts[0]}: expected a mapping, got {tree[parts[0]]!r}")
        return
    tree[parts[0]][parts[1]] = value


def _field_value(config: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _holds_integers(key: str) -> bool:
    """Whether the field `key` takes integers (perhaps also None or "auto"), by its annotation."""
    section, name = key.split(".")
    annotation = type(getattr(RunConfig(), section)).model_fields[name].annotation
    kinds = [get_origin(a) or a for a in (get_args(annotation) or (annotation,))]
    return int in kinds or any(get_args(a) and int in get_args(a) for a in get_args(annotation))


def search_space_problems(space: dict[str, Any], config: RunConfig | None = None) -> list[str]:
    """Problems with a search space: keys that are no config field or may not be searched, `when`
    conditions on unknown keys, bounds or choices the field rejects, and (given the `config` the space
    belongs to) configured values outside the space, which the first trial must use."""
    problems: list[str] = []
    known = {f"{s}.{k}" for s in SECTIONS for k in _known_keys(s)}
    for key, raw_spec in space.items():
        where = f"search.space.{key}"
        if key not in known:
            section, _, name = key.rpartition(".")
            close = ([f"{section}.{c}" for c in difflib.get_close_matches(name, _known_keys(section), n=1)]
                     if section in SECTIONS else difflib.get_close_matches(key, sorted(known), n=1))
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(f"{where}: unknown key; {hint}space keys are dotted config keys such as "
                            "train.learning_rate")
            continue
        if key.split(".")[0] in _UNSEARCHABLE_SECTIONS or key in _UNSEARCHABLE_KEYS:
            problems.append(f"{where}: cannot be searched: every trial must train and validate on the same "
                            "data and be scored by the same metric; set it outside the space")
            continue
        try:
            spec: FloatParam | IntParam | CategoricalParam = (
                raw_spec if isinstance(raw_spec, FloatParam | IntParam | CategoricalParam)
                else PARAM_SPEC.validate_python(raw_spec))
        except ValidationError:
            continue  # reported by the validation of the whole tree
        for other in spec.when or {}:
            if other not in known:
                problems.append(f"{where}.when: unknown key {other!r}; conditions name dotted config keys")
        values = spec.choices if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
        for value in values:
            try:
                with_overrides(config or RunConfig(), {key: value})
            except ConfigError as err:
                reason = err.problems[0].split(": ", 2)[-1]
                problems.append(f"{where}: {value!r} is not a valid {key}: {reason}")
        if isinstance(spec, FloatParam) and _holds_integers(key):
            problems.append(f"{where}: {key} is an integer; use type: int")
        if config is None:
            continue
        if spec.when and any(_field_value(config, k) != v for k, v in spec.when.items() if k in known):
            continue  # the default trial does not sample it
        default = _field_value(config, key)
        inside = (default in spec.choices if isinstance(spec, CategoricalParam) else
                  isinstance(default, int | float) and spec.low <= default <= spec.high)
        if not inside:
            space_text = (f"choices {spec.choices}" if isinstance(spec, CategoricalParam) else
                          f"range [{spec.low}, {spec.high}]")
            problems.append(f"{where}: the configured value {default!r} is outside the {space_text}; the "
                            "first trial trains the config as written, so include it (or set the key to a "
                            "value inside the space)")
    return problems


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of `config` with dotted-key `overrides` applied, validated as `load_config` does."""
    problems: list[str] = []
    tree = config.model_dump(mode="json")
    for key, value in overrides.items():
        _set_override(tree, key, value, problems)
    try:
        new = RunConfig.model_validate(tree)
    except ValidationError as err:
        problems.extend(_format_errors(err, tree))
    if problems:
        raise ConfigError(problems)
    return new


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> RunConfig:
    """Build the run configuration: defaults, then the YAML file at `path`, then `overrides`.

    `overrides` maps dotted keys (`train.epochs`) or unambiguous bare keys (`epochs`) to values, or is a
    list of `key=value` strings as given on the command line.
    """
    problems: list[str] = []
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist"])
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path} is not valid YAML: {exc}"]) from exc
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path} must hold a mapping with sections {', '.join(SECTIONS)}"])
        tree = loaded
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides, problems)
    for key, value in (overrides or {}).items():
        _set_override(tree, key, value, problems)
    try:
        config = RunConfig.model_validate(tree)
    except ValidationError as err:
        problems.extend(_format_errors(err, tree))
        config = None
    search = tree.get("search")
    if isinstance(search, dict) and isinstance(search.get("space"), dict):
        base = config
        if base is None:  # check the space against the rest of the config even if the search section fails
            try:
                base = RunConfig.model_validate({k: v for k, v in tree.items() if k != "search"})
            except ValidationError:
                base = None
        problems.extend(search_space_problems(search["space"], base))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML, ready to be loaded again with `load_config`. The `search` and
    `audit` sections are left out while they hold only defaults, as they do in every training run."""
    exclude = ({"search"} if config.search == SearchConfig() else set()) | \
        ({"audit"} if config.audit == AuditConfig() else set())
    return yaml.safe_dump(config.model_dump(mode="json", exclude=exclude or None), sort_keys=False)
