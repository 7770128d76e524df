"""The three evaluation scenarios (``Scenario<N>_*/run_scenario<N>.py``, each a ``main(argv)``) and ``make_report``.

``ftcp demo`` / ``ftcp reproduce`` call them in-process; ``ftcp scenario1|scenario2|scenario3|report`` and the
scripts run the same ``main``.
"""
