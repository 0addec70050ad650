"""Collection order: the smoke pipeline's tests first.

With pytest-xdist's two workers (pyproject's addopts) the suite takes as long as its longest file,
``tests/test_pipeline.py`` (one pipeline run shared by its tests). Handed out first, it runs on one worker
while the other worker takes every other file; handed out in alphabetical order, it would start only after
the files before it.
"""


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("pipeline") is None)  # stable: file order kept otherwise
