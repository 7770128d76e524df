"""Scenario2 Hybrid Enrichment: ``run_scenario2.main(argv)``."""
