"""Datasets: the embedded world (``world``), real-dataset adapters and the shared record schema."""
