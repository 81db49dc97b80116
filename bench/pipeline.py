"""The workload: a linear pipeline of steps, projects on it, and record_execution arguments."""

from __future__ import annotations

from typing import Any

from mcp import Client

from bench.harness import call

STEPS = 10
USAGE_MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-latest"), ("openai", "gpt-4o"))


def step_id(index: int) -> str:
    return f"s{index:02d}"


async def define_linear(client: Client, steps: int = STEPS) -> None:
    """s00 → s01 → … : each step depends on the one before."""
    for index in range(steps):
        depends_on = [step_id(index - 1)] if index else []
        await call(
            client, "define_process", {"process_id": step_id(index), "name": f"Step {index}", "depends_on": depends_on}
        )


WIDE_STEPS = 2_000
CHAIN = 10  # the wide pipeline is chains of this many steps; the first is the 10-step pipeline itself


def wide_processes(steps: int = WIDE_STEPS) -> list[dict[str, Any]]:
    """A large catalogue: chains of CHAIN steps (each step depends on the one before in its chain). Its
    first chain is s00 … s09, so the 10-step workload runs on it unchanged."""
    return [
        {"process_id": step_id(i), "name": f"Step {i}", "depends_on": [step_id(i - 1)] if i % CHAIN else []}
        for i in range(steps)
    ]


async def define_wide(client: Client, steps: int = WIDE_STEPS) -> None:
    await call(client, "apply_pipeline", {"processes": wide_processes(steps)})


def chain_heads(steps: int = WIDE_STEPS) -> list[str]:
    """The first step of every chain but the first: recording them gives the project many state rows."""
    return [step_id(i) for i in range(CHAIN, steps, CHAIN)]


async def new_project(client: Client, name: str) -> str:
    created = await call(client, "create_project", {"name": name, "budget_usd": "50"})
    project_id = created.get("id") or created.get("project", {}).get("id")
    if not isinstance(project_id, str):
        raise RuntimeError(f"create_project returned no id: {created}")
    return project_id


def record_args(project_id: str, n: int, steps: int = STEPS) -> dict[str, Any]:
    """The n-th call cycles through the steps in order, so every dependency is completed when it runs.

    Each output is new, so re-recording s00 makes the completed steps downstream stale (the cascade).
    """
    provider, model = USAGE_MODELS[n % len(USAGE_MODELS)]
    return {
        "project_id": project_id,
        "process_id": step_id(n % steps),
        "input_data": {"topic": "benchmark", "round": n // steps},
        "output_data": {"summary": f"result {n} of step {n % steps}", "items": [n, n + 1, n + 2], "ok": True},
        "reasoning": "benchmark workload",
        "usage": {
            "provider": provider,
            "model": model,
            "prompt_tokens": 1200 + n % 97,
            "completion_tokens": 300 + n % 31,
            "inference_time_ms": 850,
        },
    }
