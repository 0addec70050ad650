"""Losses shared by several models (one module per family): contrastive (CLIP/ITC), amc (AMC)."""

from vlrepro.losses.amc import AMCWeights, amc_loss, amc_max_loss, amc_mean_loss
from vlrepro.losses.contrastive import LogitScale, info_nce

__all__ = ["AMCWeights", "LogitScale", "amc_loss", "amc_max_loss", "amc_mean_loss", "info_nce"]
