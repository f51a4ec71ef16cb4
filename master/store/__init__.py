"""What the master keeps on disk: the SQLite job cache (jobs, returns, keys' presence, inventory)."""
