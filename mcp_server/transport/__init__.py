"""How clients reach the server: stdio (``stdio``), streamable HTTP and its uvicorn runner (``http``),
and the one check of ``PIPELINE_STATE_AUTH_TOKEN`` that MCP over HTTP and the dashboard share (``auth``).

Nothing is imported here: a stdio server never loads Starlette or uvicorn.
"""
