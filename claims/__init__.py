"""Papers' claims as pytest tests. claim.py: a claim is one declaration, a paper one folder (thesis/);
options.py: the run's options, parsed once; framework.py: subjects, checks and the run's record (wired into
pytest by the top-level conftest.py); thresholds.py: the row and known-gap types and their lookups."""
