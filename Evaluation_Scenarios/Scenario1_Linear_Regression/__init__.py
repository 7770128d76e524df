"""Scenario1 Linear Regression: ``run_scenario1.main(argv)``."""
