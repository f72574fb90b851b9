"""Graders for the exercises on the decoder chapter."""

from __future__ import annotations

__all__: list[str] = []
