"""Built-in robench plugins: margin (being written; registers nothing yet)."""
