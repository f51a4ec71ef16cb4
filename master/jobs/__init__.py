"""Jobs: the router that publishes them and collects returns, batches, and group commits of returns."""
