"""The declarative account configuration: YAML files, variables, validation with file, line and field path."""
