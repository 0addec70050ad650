"""Losses shared by several models (one module per family)."""

from vlrepro.losses.contrastive import LogitScale, info_nce

__all__ = ["LogitScale", "info_nce"]
