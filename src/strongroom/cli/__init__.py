"""The command-line front end: parse, call the services, render. Nothing else."""
