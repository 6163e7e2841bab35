"""Workflow YAML → validated spec → DAG. Pure code, no I/O."""

from app.workflow.conditions import Condition, parse_condition
from app.workflow.parser import parse_workflow
from app.workflow.spec import JobSpec, Problem, StepSpec, WorkflowError, WorkflowSpec

__all__ = [
    "Condition",
    "JobSpec",
    "Problem",
    "StepSpec",
    "WorkflowError",
    "WorkflowSpec",
    "parse_condition",
    "parse_workflow",
]
