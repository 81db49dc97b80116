"""The read-only dashboard (``pipeline-state-mcp ui``): a small web app over the configured database."""
