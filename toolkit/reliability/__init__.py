"""Reliability checks behind ``toolkit selftest``: kills and resumes, full disks, hostile input, damaged models.

Each module runs real commands (``toolkit train``, ``export``, ``pipeline run``...) in child processes
on tiny settings and returns plain dicts of what it saw; :mod:`toolkit.reliability.selftest` prints them
as a table of figures. The CI tests in ``tests/reliability`` call the same functions with small budgets.
"""
