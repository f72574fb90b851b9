"""Graders for the exercises on the quality chapter."""

from __future__ import annotations

__all__: list[str] = []
