"""docs/architecture.md names functions as they are: every `module.name` it cites resolves,
in the module that defines it (not one that merely imports it)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"


def cited() -> list[str]:
    """The dotted names in backticks whose first part is a module of the package."""
    names = []
    for text in re.findall(r"`([a-z][\w/]*\.[\w.]+)`", DOC.read_text()):
        dotted = text.replace("/", ".")
        head = dotted.split(".")[0]
        if importlib.util.find_spec(f"login_etl.{head}") is not None:
            names.append(dotted)
    return names


def resolve(dotted: str) -> object:
    if dotted.endswith(".py"):
        path = ROOT / "service" / "login_etl" / dotted.removesuffix(".py").replace(".", "/")
        if not path.with_suffix(".py").exists():
            raise ImportError(dotted)
        return path
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module("login_etl." + ".".join(parts[:i]))
        except ImportError:
            continue
        module = obj if isinstance(obj, types.ModuleType) else None
        for attr in parts[i:]:
            obj = getattr(obj, attr)
            # Where it is defined, not a name the module merely imports.
            # (a click command is its callback)
            defined = getattr(getattr(obj, "callback", obj), "__module__", None)
            if module is not None and defined is not None and defined != module.__name__:
                raise ImportError(f"{dotted}: defined in {defined}")
            module = None
        return obj
    raise ImportError(dotted)


def test_every_function_the_path_names_exists() -> None:
    names = cited()
    assert len(names) > 30
    missing = []
    for name in names:
        try:
            resolve(name)
        except (AttributeError, ImportError, TypeError):
            missing.append(name)
    assert missing == []
