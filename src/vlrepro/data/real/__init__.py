"""Adapters that turn the papers' real datasets into the shared record schema (``vlrepro.data.records``).

Each adapter reads the dataset's own on-disk format from a path the user gives (``data.real`` in
params.yaml) and returns ``Split`` objects whose records point at image files (``Record.image`` is a path
relative to the dataset's image root). Nothing is downloaded unless the user asks (``download.py``).
"""
