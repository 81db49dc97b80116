"""ORM models, one module per aggregate. Importing this package registers every table."""

from mcp_server.models.execution import ExecutionStatus, ProcessExecution
from mcp_server.models.metrics import CostSource, LLMMetrics
from mcp_server.models.process import ProcessDefinition
from mcp_server.models.project import Project, ProjectStatus
from mcp_server.models.prompt import PromptVersion
from mcp_server.models.state import ProcessState, StateName

__all__ = [
    "CostSource",
    "ExecutionStatus",
    "LLMMetrics",
    "ProcessDefinition",
    "ProcessExecution",
    "ProcessState",
    "Project",
    "ProjectStatus",
    "PromptVersion",
    "StateName",
]
