"""Report plans (AWS Backup Audit Manager): CSV and JSON reports an auditor reads without Strongroom.

- ``templates.py``: the five report templates: their columns (AWS's names) and rows, pure;
- ``render.py``: rows to CSV or JSON bytes;
- ``jobs.py``: a report job: rows from the catalog, files written to the plan's store, the job recorded;
  the daemon's daily schedule.

docs/compliance.md lists every column.
"""
