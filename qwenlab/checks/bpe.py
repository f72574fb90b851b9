"""Graders for the exercises on the bpe chapter."""

from __future__ import annotations

__all__: list[str] = []
