"""Backup plans as pure rules: AWS cron/rate schedules and tag selection (no I/O)."""
