"""Developer benchmarks, fault drills and load tests, run from a checkout: ``python -m benchmarks.NAME --help``.

Not part of the installed package (the wheel holds ``toolkit`` only). The reliability checks (``interrupt``,
``diskfull``, ``fuzz``, ``modelfiles``, ``audit``) run real commands (``toolkit train``, ``export``,
``pipeline run``...) in child processes on tiny settings and return plain dicts of what they saw;
:mod:`benchmarks.selftest` prints them as a table of figures, and the tests in ``tests/reliability`` call the
same functions with small budgets. The others print figures: ``door_load`` (HTTP load on ``toolkit door
serve``), ``door_faults`` (faults injected into a running door), ``train_overhead`` (``toolkit train``
against plain ``model.fit``), ``transfer`` (transfer-learning speed, accuracy, memory) and ``scaling``
(one training process against several multiworker processes).
"""
