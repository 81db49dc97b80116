"""ORM models, one module per aggregate. Importing this package registers every table."""

from mcp_server.enums import CostSource, ExecutionStatus, ProjectStatus, StateName
from mcp_server.models.budget import BudgetAlert, PipelineBudget
from mcp_server.models.check import ExecutionCheck
from mcp_server.models.execution import ProcessExecution
from mcp_server.models.metrics import LLMMetrics, LLMPrice
from mcp_server.models.process import ProcessDefinition
from mcp_server.models.project import Project
from mcp_server.models.prompt import PromptVersion
from mcp_server.models.revision import Revision
from mcp_server.models.state import ProcessState

__all__ = [
    "BudgetAlert",
    "CostSource",
    "ExecutionCheck",
    "ExecutionStatus",
    "LLMMetrics",
    "LLMPrice",
    "PipelineBudget",
    "ProcessDefinition",
    "ProcessExecution",
    "ProcessState",
    "Project",
    "ProjectStatus",
    "PromptVersion",
    "Revision",
    "StateName",
]
