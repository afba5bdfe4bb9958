"""The example MCP server behind tools/docs.yaml: the shop's policy pages, over stdio.

Written with the ``mcp`` package's FastMCP (``MCPServer`` in mcp 2), which
celgate already depends on. celgate starts it (``command: python`` is the
interpreter running celgate) and offers its tools as ``docs_search`` and
``docs_publish``. The starter policy allows searching only, so
``docs_publish`` is never offered to a model. The leading underscore keeps the
catalogue from loading this file as a Python tool module.
"""

from mcp.server.mcpserver import MCPServer

server = MCPServer("docs")

_PAGES = {
    "returns": "Returns are free within 30 days of delivery; refunds reach the card in 5 working days.",
    "shipping": "Orders ship within 2 working days; DHL and UPS deliver in 1-3 days.",
}


@server.tool()
def search(query: str) -> str:
    """Search the shop's policy pages (returns, shipping)."""
    lowered = query.lower()
    hits = [text for topic, text in _PAGES.items() if topic.rstrip("s") in lowered]
    return " ".join(hits) or "No policy page matches; try returns or shipping."


@server.tool()
def publish(page: str, text: str) -> str:
    """Replace a policy page (an editor's tool: the starter policy never allows it)."""
    _PAGES[page] = text
    return f"published {page}"


if __name__ == "__main__":
    server.run("stdio")
