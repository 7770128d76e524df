"""Scenario3 Sample Efficiency: ``run_scenario3.main(argv)``."""
