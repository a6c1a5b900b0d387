"""Reading recipes: TOML files onto the schema's dataclasses, with typed `--set` overrides.

Unknown keys and wrong types are errors naming the file and the key. `[variants.NAME]`
tables hold overrides for named variants of the base recipe (e.g. none / l2 / dropout),
each trained as a run. `load` records the recipe's folder, absolute, as `base`: the
folder your modules and files resolve against, also when the recipe is read back from a
run folder's config.json (`--resume`, `slim --from`, a Ray worker) in another folder.
`resolve` is the one place where a command's --set, --variant,
--data-dir and --device meet the file; `resumed` reads a run folder for --resume.
"""

import copy
import difflib
import json
import tomllib
import types
import typing
from dataclasses import asdict, fields
from pathlib import Path

from regulab import run_files
from regulab.errors import RecipeError
from regulab.recipe import rules
from regulab.recipe.schema import SECTIONS, Recipe, check


def load(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file (TOML; .json: a recipe as regulab writes it, such as a tuned
    best/recipe.json), apply `--set section.key=value` overrides, and check everything."""
    path = Path(path)
    raw = _read(path)
    raw.setdefault("name", path.stem)
    if not isinstance(raw.get("base", ""), str):
        raise RecipeError(f"{path}: base must be a string (a folder); got {raw['base']!r}")
    raw["base"] = str((path.parent / raw.get("base", "")).resolve())  # relative: to the file
    for text in overrides:
        apply_override(raw, text)
    recipe = from_dict(raw, source=str(path))
    refuse_idle(recipe, str(path))
    for text in overrides:  # an override that every variant replaces would do nothing
        section, name = text.partition("=")[0].strip().split(".")
        setters = [v for v, ov in recipe.variants.items() if name in ov.get(section, {})]
        if setters and len(setters) == len(recipe.variants):
            raise RecipeError(
                f"--set {section}.{name} has no effect: every variant of {path} sets it "
                f"([variants.{'], [variants.'.join(setters)}]); change it there"
            )
    return recipe


def _read(path: Path) -> dict:
    """The recipe file's table: TOML, or JSON for a .json file."""
    try:
        text = path.read_text()
        if path.suffix == ".json":
            raw = json.loads(text)
            if not isinstance(raw, dict):
                kind = type(raw).__name__
                raise RecipeError(f"{path}: a recipe must be a JSON object; got {kind}")
            return raw
        return tomllib.loads(text)
    except FileNotFoundError as e:
        raise RecipeError(f"recipe '{path}' does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe '{path}' cannot be read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from e
    except ValueError as e:
        raise RecipeError(f"{path}: not valid JSON: {e}") from e


def from_dict(raw: dict, source: str = "recipe") -> Recipe:
    """Build a Recipe from nested dicts (a parsed TOML file); errors name `source` and the key."""
    raw = copy.deepcopy(raw)
    variants = raw.pop("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise RecipeError(f"{source}: variants must be tables [variants.NAME] of overrides")
    recipe = _build(Recipe, {k: v for k, v in raw.items()}, source, "")
    check(recipe, source)
    for name, overrides in variants.items():
        try:
            check(_build(Recipe, _merge(asdict(recipe), overrides), source, ""), source)
        except RecipeError as e:
            where = f"{source}: [variants.{name}]"
            raise RecipeError(str(e).replace(f"{source}:", where, 1)) from None
        if {"variants", "name", "base"} & overrides.keys():
            raise RecipeError(
                f"{source}: [variants.{name}] may not set 'variants', 'name' or 'base'"
            )
    recipe.variants = variants
    return recipe


def refuse_idle(recipe: Recipe, source: str = "recipe") -> None:
    """Refuse a key that no run uses (`rules.idle_settings`): one a variant sets that its own
    model, optimizer, schedule or data set does not use, or one the recipe sets that its
    choices do not use and no variant inheriting it uses either."""
    unused = rules.idle_settings(recipe)  # the recipe's own keys that its choices do not use
    for name, run in expand(recipe).items() if recipe.variants else ():
        sets = recipe.variants[name]
        idle = rules.idle_settings(run)
        for key, problem in idle.items():
            section, field = key.split(".")
            if field in sets.get(section, {}):
                raise RecipeError(f"{source}: [variants.{name}] {problem}")
        for key in list(unused):
            section, field = key.split(".")
            if field not in sets.get(section, {}) and key not in idle:
                del unused[key]  # a variant inherits it and uses it
    for problem in unused.values():
        raise RecipeError(f"{source}: {problem}")


def seeds(recipe: Recipe, count: int = 1, first: int | None = None) -> list[int]:
    """The run seeds first (default train.seed), first + 1, ..., first + count - 1, each in
    [0, 2^63) (with data.vary_seed, data.seed + seed too); errors name --seed and --seeds."""
    first = recipe.train.seed if first is None else first
    last = first + count - 1
    offset = recipe.data.seed if recipe.data.vary_seed else 0
    if first < 0 or last + offset >= 2**63:
        vary = f" + data.seed {offset} (data.vary_seed)" if offset else ""
        raise RecipeError(
            f"seeds must be integers in [0, 2^63): the first seed {first} (--seed or "
            f"train.seed) + --seeds {count} - 1{vary} = {last + offset} is too large"
        )
    return list(range(first, last + 1))


def expand(recipe: Recipe) -> dict[str, Recipe]:
    """The runs of a recipe: {variant name: Recipe without variants}; one named after it if none."""
    base = asdict(recipe)
    base["variants"] = {}
    if not recipe.variants:
        return {recipe.name or "run": from_dict(base)}
    return {name: from_dict(_merge(base, ov)) for name, ov in recipe.variants.items()}


def to_dict(recipe: Recipe) -> dict:
    return asdict(recipe)


def apply_override(raw: dict, text: str) -> None:
    """Apply 'section.key=value' to raw (nested dicts); the value is read as TOML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or len(parts) != 2 or parts[0] not in SECTIONS or not parts[1]:
        raise RecipeError(
            f"--set must be section.key=value with a section among {', '.join(SECTIONS)} "
            f"(such as optim.lr=0.1); got {text!r}"
        )
    section, name = parts
    known = {f.name: f.type for f in fields(SECTIONS[section])}
    if name not in known:
        raise RecipeError(f"--set {key}: unknown key{_suggest(name, known)}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        if not _allows(known[name], str):
            raise RecipeError(
                f"--set {key}: {value.strip()!r} is not a value of type {_type_name(known[name])}"
            ) from None
        parsed = value.strip()  # a bare word for a text field: --set data.name=digits
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise RecipeError(f"--set {key}: [{section}] in the recipe is not a table")
    raw[section][name] = parsed
    _value(parsed, known[name], f"--set {key}")


def _build(cls, raw, source: str, prefix: str):
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: [{prefix.rstrip('.')}] must be a table; got {raw!r}")
    known = {f.name: f.type for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        where = f"{prefix}{key}"
        if key not in known:
            raise RecipeError(f"{source}: unknown key '{where}'{_suggest(key, known)}")
        kind = known[key]
        if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
            values[key] = _build(kind, value, source, f"{where}.")
        elif key == "variants":
            values[key] = value
        else:
            values[key] = _value(value, kind, f"{source}: {where}")
    return cls(**values)


def _value(value, kind, where: str):
    """Check value against the annotation kind; ints are accepted for floats."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _value(value, option, where)
            except RecipeError:
                continue
        raise RecipeError(f"{where} must be {_type_name(kind)}; got {value!r}")
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list of {_type_name(item)}; got {value!r}")
        return [_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise RecipeError(
            f"{where} must be {_type_name(kind)}; got {value!r} ({type(value).__name__})"
        )
    return value


def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return {**words, dict: "a table"}.get(kind, str(kind))


def _allows(kind, base) -> bool:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return base in typing.get_args(kind)
    return kind is base


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f" (known: {', '.join(known)}){hint}"


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "variants":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve(
    path: str | Path,
    overrides: list[str] = (),
    *,
    variant: str | None = None,
    one: str | None = None,
    data_dir: str | Path | None = None,
    device: str | None = None,
) -> Recipe:
    """The recipe a command runs: the file and its `--set` overrides, the variant named by
    `--variant`, then `--data-dir` and `--device` (see `place`).

    one: the command runs a single variant (its text ends the error), so a recipe with
    variants needs one named; without it, a variant is picked only if named.
    """
    recipe = load(path, overrides)
    if variant is not None or (one is not None and recipe.variants):
        if variant not in recipe.variants:
            names = ", ".join(recipe.variants) or "(none: the recipe has no variants)"
            why = f" ({one})" if one else ""
            raise RecipeError(f"--variant must be one of {names}{why}; got {variant!r}")
        recipe = expand(recipe)[variant]
    return place(recipe, data_dir, device)


def place(recipe: Recipe, data_dir=None, device: str | None = None) -> Recipe:
    """Set where the data lives (data.root) and the device (train.device), in the recipe and
    in each of its variants: they describe this machine, so they win over the recipe."""
    for key, value in (("data.root", None if data_dir is None else str(data_dir)),
                       ("train.device", device)):  # fmt: skip
        if value is None:
            continue
        section, name = key.split(".")
        setattr(getattr(recipe, section), name, value)
        for overrides in recipe.variants.values():
            if name in overrides.get(section, {}):
                overrides[section][name] = value
    return recipe


def stored_run(folder: Path, option: str, also: str = "") -> dict:
    """config.json of a run folder of `regulab train`, checked (`run_files.train_config`);
    errors name `option`, and `also` another kind of folder it takes."""
    return run_files.train_config(folder, option, also)


def resumed(folder: Path, path: str | Path | None = None, data_dir=None) -> tuple[Recipe, list]:
    """(recipe, seeds) of the run in folder, for `--resume`; RECIPE, if given, must match it.

    Every file of every run in folder is checked before anything is resumed
    (`run_files.check_run`): a fault is one line naming the file, and nothing is written.
    """
    stored = stored_run(folder, "--resume")
    recipe = from_dict(stored["recipe"], source=str(folder / "config.json"))
    if stored.get("variant") is not None:
        recipe.name = stored["variant"]  # one run of a multi-run folder keeps its name
        run_files.check_run(folder, "--resume")
    else:  # the top folder of runs/VARIANT/seed-N
        for name in expand(recipe):
            for seed in stored["seeds"]:
                if (folder / "runs" / name / f"seed-{seed}").is_dir():
                    run_files.check_run(folder / "runs" / name / f"seed-{seed}", "--resume")
    if path is not None:
        given = load(path)
        given.name, given.base = recipe.name, recipe.base  # the run's code is where it was
        if to_dict(given) != to_dict(recipe):
            raise RecipeError(
                f"RECIPE {path} differs from the recipe of the run in {folder}; "
                "leave RECIPE out to resume that run"
            )
    return place(recipe, data_dir), stored["seeds"]
