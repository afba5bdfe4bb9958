"""A real MCP server for tests: the ``mcp`` package's FastMCP (``MCPServer`` in mcp 2) with two tools.

``python tests/helpers/mcp_server.py http PORT`` serves streamable HTTP on
127.0.0.1:PORT at ``/mcp``; ``python tests/helpers/mcp_server.py stdio``
speaks stdio. ``search`` answers from its arguments; ``wipe`` records that
it ran in the file ``$MCP_WIPE_LOG`` (a test checks that a denied call never
got here).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

__all__ = ["server"]

server = MCPServer("docs")


@server.tool()
def search(query: str, limit: int = 3) -> str:
    """Search the documentation."""
    return f"{limit} results for {query!r}"


@server.tool()
def wipe() -> str:
    """Delete every document."""
    Path(os.environ["MCP_WIPE_LOG"]).write_text("wiped")
    return "wiped"


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
