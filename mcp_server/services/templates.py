"""Prompt templates: {{placeholder}} discovery and rendering (pure)."""

from __future__ import annotations

import hashlib
import json
import re

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholders(template: str | None) -> list[str]:
    """Placeholder names in order of first appearance, without duplicates."""
    if not template:
        return []
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def missing_arguments(template: str | None, arguments: dict[str, str]) -> list[str]:
    return [name for name in placeholders(template) if name not in arguments]


def render(template: str | None, arguments: dict[str, str]) -> str:
    """Replace each {{name}} by its argument; the caller checks that none is missing."""
    if not template:
        return ""
    return PLACEHOLDER.sub(lambda match: arguments[match.group(1)], template)


def content_hash(system_prompt: str | None, user_template: str | None, temperature: float | None) -> str:
    canonical = json.dumps([system_prompt, user_template, temperature], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
