"""What each piece of a sweep report hands back to `build_report`: its markdown to print, and its tables and images
to log to W&B (the files themselves are already written)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Table = tuple[list[str], list[list[str]]]  # (header, rows of formatted cells)


@dataclass
class ReportPart:
    markdown: str
    tables: dict[str, Table] = field(default_factory=dict)  # W&B key suffix -> table
    images: dict[str, Path] = field(default_factory=dict)  # W&B key suffix -> PNG


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in body]]
