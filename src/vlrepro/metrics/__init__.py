"""Evaluation metrics shared by the paper stages."""
