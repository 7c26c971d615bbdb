"""Frameworks of AWS Backup Audit Manager controls, evaluated against the catalog (docs/compliance.md).

- ``snapshot.py``: the catalog state and the clock an evaluation reads, taken once;
- ``controls.py``: one pure function per control: a subject (a resource or a backup plan) -> verdict and reason;
- ``evaluate.py``: a framework's controls over their scopes, pure;
- ``state.py``: evaluating the applied frameworks, storing the verdicts, the compliance-change events.
"""
