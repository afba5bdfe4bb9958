"""Find drop-in folders and load each: requirements, an isolated import, ``__celgate__``, exports.

A folder under the agents directory that holds ``agent.py`` (or a
declarative ``agent.yaml``, loaded by ``declarative``) is one drop-in;
its path relative to the directory (``/``-separated) is the model name. Its
subfolders belong to it: discovery does not look for agents inside an agent.

Each drop-in becomes a private package ``celgate_dropins.<slug>`` whose
``__path__`` is its folder, so ``from .helpers import x`` works, and the
folder is on ``sys.path`` while ``agent.py`` executes, so ``import helpers``
works too. Top-level modules a folder provides are swapped out of
``sys.modules`` around the import and kept under the agent's package
afterwards, so two agents' ``helpers.py`` never collide and never replace a
module the process already had. The drop-in folder itself is never a package
named ``agents``: the SDK keeps that name.

Nothing here imports the SDK at module level (``import agents`` costs ~1 s and
~90 MiB): ``load_agent`` hands the imported module to ``exports`` (the
SDK-dependent half of loading), imported once a drop-in actually exists.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .dropin import DropinConfig, LoadedAgent, Runtime
from .errors import LoadError

__all__ = ["ENTRY_FILE", "ROOT_PACKAGE", "YAML_FILE", "author_traceback", "find_agents", "forget", "load_agent"]

ROOT_PACKAGE = "celgate_dropins"
ENTRY_FILE = "agent.py"
YAML_FILE = "agent.yaml"  # a declarative agent (see ``declarative``)
REQUIREMENTS_FILE = "requirements.txt"
_CONFIG_TYPES: dict[str, type] = {"model": str, "upstream": str, "description": str, "max_turns": int}
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def find_agents(directory: Path) -> dict[str, Path]:
    """Map model name -> folder for every drop-in under ``directory`` (sorted by name)."""
    found: dict[str, Path] = {}
    if directory.is_dir():
        for folder in _walk(directory):
            found[folder.relative_to(directory).as_posix()] = folder
    return dict(sorted(found.items()))


def load_agent(name: str, folder: Path, runtime: Runtime) -> LoadedAgent:
    """Import and validate one drop-in; raises ``LoadError`` with a diagnostic kind."""
    missing = _missing_requirements(folder)
    if missing:
        raise LoadError(
            "missing_dependency",
            f"{REQUIREMENTS_FILE} lists packages that are not installed: {', '.join(missing)}",
            folder / REQUIREMENTS_FILE,
        )
    module = _import_dropin(name, folder)
    try:
        config = _read_config(module)
        # The SDK-dependent half of loading; imported only now that a drop-in exists.
        from . import exports

        export = exports.resolve(module)
    except LoadError:
        forget(name)
        raise
    except Exception as exc:  # resolution walks the author's objects; report, don't crash the registry
        forget(name)
        raise LoadError("bad_export", traceback.format_exc().rstrip()) from exc
    return LoadedAgent(
        name=name,
        source=folder / ENTRY_FILE,
        kind=export.kind,
        entry=export.entry,
        workflow=export.workflow,
        workflow_input=export.workflow_input,
        config=config,
        tools=export.tools,
        runtime=runtime,
        module=module,
    )


def forget(name: str) -> None:
    """Drop every module of a drop-in from ``sys.modules`` (running versions keep theirs)."""
    package = _package_name(name)
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[key]


def _walk(folder: Path) -> Iterator[Path]:
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        if (child / ENTRY_FILE).is_file() or (child / YAML_FILE).is_file():
            yield child
        else:
            yield from _walk(child)


def _missing_requirements(folder: Path) -> list[str]:
    """Requirement lines whose distribution is not installed (markers are not evaluated)."""
    path = folder / REQUIREMENTS_FILE
    if not path.is_file():
        return []
    import importlib.metadata  # only for a drop-in with requirements: ~1 MiB a plain proxy never needs

    missing = []
    for line in path.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement or requirement.startswith(("-", ".", "/")) or "://" in requirement:
            continue
        match = _REQUIREMENT_NAME.match(requirement)
        if match is None:
            continue
        try:
            importlib.metadata.distribution(match.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def _read_config(module: types.ModuleType) -> DropinConfig:
    """Validate ``__celgate__``: a typo must fail loudly, not silently use defaults."""
    raw = getattr(module, "__celgate__", None)
    if raw is None:
        return DropinConfig()
    if not isinstance(raw, dict):
        raise LoadError("bad_config", f"__celgate__ must be a dict, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_CONFIG_TYPES))
    if unknown:
        raise LoadError(
            "bad_config",
            f"__celgate__ has unknown keys {unknown}; allowed: {sorted(_CONFIG_TYPES)}",
        )
    for key, value in raw.items():
        _check_config_value(key, value)
    return DropinConfig(**raw)


def _check_config_value(key: str, value: Any) -> None:
    expected = _CONFIG_TYPES[key]
    if not isinstance(value, expected) or isinstance(value, bool):
        raise LoadError(
            "bad_config",
            f"__celgate__[{key!r}] must be {expected.__name__}, got {type(value).__name__}",
        )
    if key == "max_turns" and isinstance(value, int) and value < 1:
        raise LoadError("bad_config", f"__celgate__['max_turns'] must be >= 1, got {value}")
    if key == "upstream" and isinstance(value, str) and not value.startswith(("http://", "https://")):
        raise LoadError("bad_config", f"__celgate__['upstream'] must be an http(s) URL, got {value!r}")
    if key in ("model", "upstream") and isinstance(value, str) and not value.strip():
        raise LoadError("bad_config", f"__celgate__[{key!r}] must not be empty")


def _package_name(name: str) -> str:
    """A unique, importable package name per model name (``a-b`` and ``a_b`` differ)."""
    slug = re.sub(r"\W", "_", name, flags=re.ASCII)
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{ROOT_PACKAGE}.{slug}_{digest}"


def _import_dropin(name: str, folder: Path) -> types.ModuleType:
    """Execute ``agent.py`` as ``<package>.agent``; any error becomes ``import_error``."""
    forget(name)
    package = _package_name(name)
    _ensure_package(ROOT_PACKAGE, None)
    _ensure_package(package, folder)
    spec = importlib.util.spec_from_file_location(f"{package}.agent", folder / ENTRY_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        with _isolated_imports(package, folder):
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        forget(name)
        raise LoadError("import_error", author_traceback(exc, folder)) from exc
    return module


def _ensure_package(name: str, folder: Path | None) -> None:
    """Register a package module without executing any ``__init__.py``."""
    if folder is None and name in sys.modules:
        return
    locations = [str(folder)] if folder is not None else []
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = locations
    package = importlib.util.module_from_spec(spec)
    package.__path__ = locations
    sys.modules[name] = package


@contextmanager
def _isolated_imports(package: str, folder: Path) -> Iterator[None]:
    """Make the folder importable for the duration of the import, then re-home its modules.

    Bytecode is not written: ``.pyc`` timestamps have one-second resolution,
    so a quick same-size edit could reload stale code, and ``__pycache__``
    writes would only add noise to a watched folder.
    """
    names = _provided_names(folder)
    displaced = {k: sys.modules.pop(k) for k in list(sys.modules) if _top(k) in names}
    path_entry = str(folder)
    sys.path.insert(0, path_entry)
    importlib.invalidate_caches()
    dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        yield
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
        sys.path.remove(path_entry)
        for key in [k for k in sys.modules if _top(k) in names]:
            sys.modules.setdefault(f"{package}.{key}", sys.modules.pop(key))
        sys.modules.update(displaced)


def _provided_names(folder: Path) -> set[str]:
    """Top-level module names the folder can provide via ``import <name>``.

    Standard-library names are left alone: builtin and frozen modules would
    be re-created rather than shadowed (use relative imports for such helpers).
    """
    names = {p.stem for p in folder.glob("*.py")}
    names |= {p.parent.name for p in folder.glob("*/*.py")}
    return {n for n in names if n.isidentifier() and n not in sys.stdlib_module_names}


def _top(module_name: str) -> str:
    return module_name.partition(".")[0]


def author_traceback(exc: BaseException, folder: Path) -> str:
    """The traceback from the first frame in the drop-in's folder (no importlib noise)."""
    tb = exc.__traceback__
    while tb is not None and not Path(tb.tb_frame.f_code.co_filename).is_relative_to(folder):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
