"""Pydantic models of what goes in and out of the tools, one module per aggregate."""
