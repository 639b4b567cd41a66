"""Validation: latency protocol and statistics, accuracy and fidelity, environment, budget gate."""
