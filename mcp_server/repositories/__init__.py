"""All SQL lives here. Repositories flush and never commit: the unit of work owns the transaction."""

from mcp_server.repositories.alerts import BudgetAlertRepository, PipelineBudgetRepository
from mcp_server.repositories.base import Page
from mcp_server.repositories.executions import ExecutionChange, ExecutionRepository
from mcp_server.repositories.metrics import MetricsRepository
from mcp_server.repositories.prices import PriceRepository
from mcp_server.repositories.processes import DefinitionChange, ProcessDefinitionRepository
from mcp_server.repositories.projects import ProjectChange, ProjectRepository
from mcp_server.repositories.prompts import PromptRepository
from mcp_server.repositories.revisions import RevisionRepository
from mcp_server.repositories.states import StateRepository

__all__ = [
    "BudgetAlertRepository",
    "DefinitionChange",
    "ExecutionChange",
    "ExecutionRepository",
    "MetricsRepository",
    "Page",
    "PipelineBudgetRepository",
    "PriceRepository",
    "ProjectChange",
    "ProcessDefinitionRepository",
    "ProjectRepository",
    "PromptRepository",
    "RevisionRepository",
    "StateRepository",
]
