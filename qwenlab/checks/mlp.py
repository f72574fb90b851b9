"""Graders for the exercises on the mlp chapter."""

from __future__ import annotations

__all__: list[str] = []
