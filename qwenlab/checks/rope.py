"""Graders for the exercises on the rope chapter."""

from __future__ import annotations

__all__: list[str] = []
