"""Graders for the exercises on the train chapter."""

from __future__ import annotations

__all__: list[str] = []
