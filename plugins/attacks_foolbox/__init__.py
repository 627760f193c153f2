"""Built-in robench plugins: attacks_foolbox (being written; registers nothing yet)."""
