"""How one account calls another: signed HTTP requests to its `strongroom serve`."""
