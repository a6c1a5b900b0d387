"""The user's own code in a recipe: "module:callable" resolved to the callable.

`resolve_callable(spec, key, base)` takes "pkg.mod:attr" (a dotted attr is allowed,
"pkg.mod:Class.make") or "path/to/file.py:attr". A relative file path and a module
name resolve against the recipe's folder `base` first, then sys.path: the folder is
put at the front of sys.path only while importing. A file is loaded under a module
name made from its absolute path, so two recipes' `model.py` never meet; a module
found in the recipe's folder replaces a module of the same name imported from
elsewhere. Errors name the key, the module and what was found; an error raised inside
the user's module is reported with its own message.
"""

import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from regulab.errors import RecipeError

FORM = "'module:callable' or 'path/to/file.py:callable'"


def is_spec(text: str) -> bool:
    """Whether text has the form "module:attr" or "file.py:attr"."""
    where, sep, attr = text.rpartition(":")
    return bool(sep and where.strip()) and all(p.isidentifier() for p in attr.split("."))


def resolve_callable(spec: str, key: str, base: str | Path = "") -> Callable:
    """The callable that spec names, imported relative to the folder base ("" = the current
    folder); RecipeError naming key if there is no such module, attribute, or callable."""
    if not isinstance(spec, str) or not is_spec(spec):
        raise RecipeError(f"{key} must be {FORM}; got {spec!r}")
    where, _, attr = spec.rpartition(":")
    folder = Path(base).resolve()
    module = _import_file(where, key, folder) if _is_file(where) else _import(where, key, folder)
    found = module
    for part in attr.split("."):
        if not hasattr(found, part):
            raise RecipeError(
                f"{key}: {_origin(module)} has no attribute {attr!r} (from {spec!r}); "
                f"it has: {', '.join(_public(module)) or 'no public names'}"
            )
        found = getattr(found, part)
    if not callable(found):
        raise RecipeError(
            f"{key}: {spec!r} is not callable (a function or class); it is "
            f"{type(found).__name__} {found!r:.40}"
        )
    return found


def call(fn: Callable, kwargs: dict, key: str, spec: str, by: str):
    """fn(**kwargs), once `check_keywords` says they fit; an exception raised inside fn is a
    one-line RecipeError naming `by` (the key of spec, e.g. "model.factory") and key."""
    check_keywords(fn, kwargs, key, spec)
    try:
        return fn(**kwargs)
    except Exception as e:
        with_kwargs = f" with {key} {kwargs}" if kwargs else ""
        raise RecipeError(
            f"{by} {spec!r} raised {type(e).__name__}{with_kwargs}: {_one_line(e)}"
        ) from e


def _one_line(e: Exception) -> str:
    """The first line of an exception's message (torch's messages can run to many)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def check_keywords(fn: Callable, kwargs: dict, key: str, spec: str, partial=False) -> None:
    """RecipeError naming key unless kwargs fit fn's signature (partial: as some of them)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: let the call say it
        return
    try:
        (signature.bind_partial if partial else signature.bind)(**kwargs)
    except TypeError as e:
        raise RecipeError(f"{key} {kwargs} do not fit {spec!r}{signature}: {e}") from None


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import_file(where: str, key: str, folder: Path):
    """The module of a .py file (relative to folder), loaded once per path and version."""
    path = Path(where)
    path = (path if path.is_absolute() else folder / path).resolve()
    if not path.is_file():
        raise RecipeError(
            f"{key}: no file {path} (from {where!r}; a relative path is relative to the "
            f"recipe's folder {folder})"
        )
    stat = path.stat()
    digest = hashlib.sha1(f"{path}|{stat.st_mtime_ns}|{stat.st_size}".encode()).hexdigest()
    name = f"_regulab_user_{digest[:12]}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as a normal import does: dataclasses and pickle look it up
    try:
        with _front(path.parent, folder):
            spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise _inside(key, str(path), e) from e
    return module


def _import(where: str, key: str, folder: Path):
    """The module named where, looked up in folder first, then on sys.path."""
    if not all(p.isidentifier() for p in where.split(".")):
        raise RecipeError(f"{key} must be {FORM}; {where!r} is neither a module nor a .py file")
    top = where.partition(".")[0]
    local = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
    origin = local.origin if local is not None else None  # None, "namespace": not a module here
    cached = getattr(sys.modules.get(top), "__file__", origin)
    if origin not in (None, "namespace") and cached != origin:
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]  # another folder's module of that name: take this folder's
    try:
        with _front(folder):
            return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name is not None and (where == e.name or where.startswith(e.name + ".")):
            raise RecipeError(
                f"{key}: no module {e.name!r} in the recipe's folder {folder} or on sys.path "
                f"(from {where!r})"
            ) from None
        raise _inside(key, f"module {where!r}", e) from e
    except Exception as e:
        raise _inside(key, f"module {where!r}", e) from e


@contextmanager
def _front(*folders: Path):
    """sys.path with folders at its front, only while the block runs."""
    added = [str(f) for f in folders]
    sys.path[0:0] = added
    importlib.invalidate_caches()  # files written since the last import in these folders
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def _inside(key: str, what: str, e: Exception) -> RecipeError:
    return RecipeError(f"{key}: importing {what} raised {type(e).__name__}: {e}")


def _origin(module) -> str:
    file = getattr(module, "__file__", None)
    name = module.__name__
    if name.startswith("_regulab_user_"):
        return f"file {file}"
    return f"module {name!r}" + (f" ({file})" if file else "")


def _public(module) -> list[str]:
    """The module's public callables, as the error's hint."""
    names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(n for n in names if callable(getattr(module, n)))[:12]
