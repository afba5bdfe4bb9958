"""Python gateway tools: order lookups for any agent that lists them (demo data, offline).

A module in the tools directory offers its ``@function_tool`` functions (or
the plain typed functions listed in ``__tools__``). The schema comes from the
signature, the description from the docstring. See docs/tools.md.
"""

from agents import function_tool

_ORDERS = {
    "1001": ("shipped", "DHL", "2 items"),
    "1002": ("being packed", None, "1 item"),
    "1003": ("delivered", "UPS", "3 items"),
}


@function_tool
def lookup_order(order_id: str) -> str:
    """The status, carrier and contents of an order, by its number."""
    found = _ORDERS.get(order_id.strip().lstrip("#"))
    if found is None:
        return f"No order {order_id}."
    status, carrier, contents = found
    via = f", via {carrier}" if carrier else ""
    return f"Order {order_id}: {status}{via} ({contents})."
