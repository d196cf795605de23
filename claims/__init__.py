"""The thesis's claims as pytest tests: one file per claim, thresholds in thresholds.py, the
fixtures and report machinery in framework.py (wired into pytest by the top-level conftest.py)."""
