"""The domain operations that every front end calls."""
