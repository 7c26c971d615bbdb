"""Backup plans as pure rules (no I/O, stdlib only): AWS cron/rate schedules, tag selection, firing, records."""
