"""Python gateway tools: a module in ``--tools`` whose functions become catalogue tools.

A module offers its tools in one of two ways, and ``__tools__`` wins:

- ``__tools__ = [lookup_order, cancel_order]``: plain typed functions (or
  ``FunctionTool``s), turned into tools with the SDK's ``function_tool``, so
  the JSON schema comes from the signature and the description from the
  docstring, exactly as for a drop-in's own tools;
- otherwise every module-level ``FunctionTool`` (``@function_tool``).

Each module is imported under a private name (``celgate_tools.<stem>_<hash>``)
without writing bytecode, so a reload always runs the current file. A module
that raises, offers nothing, or offers something that is not a function is a
load failure with the traceback from the author's own frame.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any

from agents import FunctionTool, function_tool

from .discovery import author_traceback
from .errors import LoadError

__all__ = ["load_python_tools"]

_PACKAGE = "celgate_tools"


def load_python_tools(path: Path) -> list[FunctionTool]:
    """The tools of one module file; raises ``LoadError`` (``import_error``, ``no_tools``, ``bad_tools``)."""
    module = _import(path)
    offered = getattr(module, "__tools__", None)
    if offered is None:
        tools = [value for value in vars(module).values() if isinstance(value, FunctionTool)]
    elif isinstance(offered, list | tuple):
        tools = [_as_tool(entry, index) for index, entry in enumerate(offered)]
    else:
        raise LoadError("bad_tools", f"__tools__ must be a list of functions, got {type(offered).__name__}")
    if not tools:
        raise LoadError(
            "no_tools", "the module offers no tools: decorate functions with @function_tool or list them in __tools__"
        )
    return tools


def _as_tool(entry: Any, index: int) -> FunctionTool:
    if isinstance(entry, FunctionTool):
        return entry
    if not inspect.isfunction(entry):
        raise LoadError("bad_tools", f"__tools__[{index}] is a {type(entry).__name__}, not a function")
    try:
        return function_tool(entry)
    except Exception as exc:  # the SDK reads the signature and docstring; report what it disliked
        raise LoadError("bad_tools", f"__tools__[{index}] ({entry.__name__}): {exc}") from exc


def _import(path: Path) -> types.ModuleType:
    slug = re.sub(r"\W", "_", path.stem, flags=re.ASCII)
    name = f"{_PACKAGE}.{slug}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic models look their module up there
    dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise LoadError("import_error", author_traceback(exc, path.parent)) from exc
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
    return module
