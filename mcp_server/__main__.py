"""``python -m mcp_server``: the same as the ``pipeline-state-mcp`` command."""

import sys

from mcp_server.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
