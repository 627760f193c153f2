"""Built-in robench plugins: attacks_art (being written; registers nothing yet)."""
