"""Built-in robench plugins: attacks_native (being written; registers nothing yet)."""
