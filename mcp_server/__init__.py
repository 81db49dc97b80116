"""pipeline-state-mcp: an MCP server that keeps the state of multi-step LLM pipelines."""
