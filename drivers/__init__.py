"""Device models and the servers that drive them."""
