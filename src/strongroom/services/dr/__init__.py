"""Disaster recovery as one resumable command: runbooks of typed steps (docs/disaster-recovery.md).

``engine`` runs, resumes and rehearses runs and persists each step's state; each step type is a
handler in its own module, found by name in ``steps``.
"""
