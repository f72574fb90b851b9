"""Graders for the exercises on the norm chapter."""

from __future__ import annotations

__all__: list[str] = []
