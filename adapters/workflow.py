"""Agent Builder ``run_workflow`` exports: find their input model and build the input.

An export looks like ``async def run_workflow(workflow_input: WorkflowInput)``
with ``class WorkflowInput(BaseModel): input_as_text: str``. That shape
carries one text and no history: a drop-in of this kind gets the text of the
request's last user message only (``Conversation.last_user_text``). Its
output is normalised by ``chunks.output_text``.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, TypeGuard

from pydantic import BaseModel

from .errors import LoadError

__all__ = ["build_input", "input_model"]

INPUT_FIELD = "input_as_text"


def input_model(module: types.ModuleType, run_workflow: Any) -> type[BaseModel]:
    """The pydantic model of the first parameter's annotation, else ``module.WorkflowInput``."""
    candidate = _annotated_model(run_workflow)
    if candidate is None:
        candidate = getattr(module, "WorkflowInput", None)
    if not _is_model(candidate):
        raise LoadError(
            "bad_export",
            "run_workflow needs a pydantic input model: annotate its parameter or define "
            f"`class WorkflowInput(BaseModel): {INPUT_FIELD}: str`",
        )
    fields = candidate.model_fields
    if INPUT_FIELD not in fields:
        raise LoadError("bad_export", f"{candidate.__name__} has no field {INPUT_FIELD!r}")
    required = sorted(n for n, f in fields.items() if f.is_required() and n != INPUT_FIELD)
    if required:
        raise LoadError(
            "bad_export",
            f"{candidate.__name__} requires fields celgate cannot fill: {', '.join(required)}",
        )
    return candidate


def build_input(model: type[BaseModel], text: str) -> BaseModel:
    return model.model_validate({INPUT_FIELD: text})


def _annotated_model(run_workflow: Any) -> type[BaseModel] | None:
    parameters = list(inspect.signature(run_workflow).parameters.values())
    if not parameters:
        return None
    try:
        hints = typing.get_type_hints(run_workflow)
    except Exception:  # exports with unresolvable annotations still fall back to WorkflowInput
        return None
    candidate = hints.get(parameters[0].name)
    return candidate if _is_model(candidate) else None


def _is_model(candidate: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)
