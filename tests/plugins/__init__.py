"""A toy pass and a toy runtime, each in one file: what CONTRIBUTING's "Adding a pass" and
"Adding a runtime" show (tests/unit/test_plugins.py imports them and finds them everywhere)."""
