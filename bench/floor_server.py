"""The floor: the smallest MCPServer the SDK allows, one no-op tool, served over stdio.

Every timing in the benchmark is a ratio against this process, started and called with the same
client and transport in the same run, so the figures say what our server adds on top of the SDK.
"""

from mcp.server.mcpserver import MCPServer


def build_server() -> MCPServer:
    server = MCPServer(name="floor")

    @server.tool()
    async def noop() -> str:
        """Do nothing."""
        return "ok"

    return server


if __name__ == "__main__":
    build_server().run("stdio")
