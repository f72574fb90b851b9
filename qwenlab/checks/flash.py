"""Graders for the exercises on the flash_attention chapter."""

from __future__ import annotations

__all__: list[str] = []
