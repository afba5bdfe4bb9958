"""An Agent Builder-style export with a handoff, served as model ``TriageWorkflow``.

Shaped like Agent Builder's "Code -> Agents SDK -> Python" output: a
module-level ``AsyncOpenAI()`` client, ``WorkflowInput`` with
``input_as_text`` and ``run_workflow`` wrapping its run in ``trace(...)``.
celgate serves it unchanged: the client and the runs are routed through
celgate and tracing export is off. Agents set no model, so they run on
``--agents-model``.
"""

from types import SimpleNamespace

from openai import AsyncOpenAI
from pydantic import BaseModel

from agents import Agent, RunConfig, Runner, TResponseInputItem, function_tool, trace

from .helpers import REFUND_LIMIT_EUR, describe_invoice

__celgate__ = {"description": "Routes customer questions; billing questions go to a Billing agent."}

client = AsyncOpenAI()
ctx = SimpleNamespace(guardrail_llm=client)


@function_tool
def get_invoice(invoice_id: str) -> str:
    """Look up an invoice by id, e.g. INV-1001."""
    return describe_invoice(invoice_id)


@function_tool
def issue_refund(invoice_id: str, amount_eur: float) -> str:
    """Refund part of an invoice."""
    if amount_eur > REFUND_LIMIT_EUR:
        return f"Refunds above {REFUND_LIMIT_EUR:.0f} EUR need a human; nothing was refunded."
    return f"Refunded {amount_eur:.2f} EUR on {invoice_id}."


billing = Agent(
    name="Billing",
    instructions="You handle invoices and refunds. Use the tools; never invent invoice data.",
    tools=[get_invoice, issue_refund],
)

triage = Agent(
    name="Triage",
    instructions=(
        "Decide what the customer needs. Hand billing questions (invoices, refunds, payments) "
        "to Billing; answer anything else briefly yourself."
    ),
    handoffs=[billing],
)


class WorkflowInput(BaseModel):
    input_as_text: str


async def run_workflow(workflow_input: WorkflowInput):
    with trace("TriageWorkflow"):
        workflow = workflow_input.model_dump()
        conversation_history: list[TResponseInputItem] = [
            {"role": "user", "content": [{"type": "input_text", "text": workflow["input_as_text"]}]}
        ]
        result = await Runner.run(
            triage,
            input=[*conversation_history],
            run_config=RunConfig(trace_metadata={"__trace_source__": "agent-builder", "workflow_id": "wf_triage_demo"}),
        )
        return {"output_text": result.final_output_as(str)}
