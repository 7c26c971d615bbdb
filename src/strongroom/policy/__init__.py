"""Who may do what to a vault: principals, access policies in AWS's shape, and vault locks."""
