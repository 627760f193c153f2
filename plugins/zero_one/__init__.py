"""Built-in robench plugins: zero_one (being written; registers nothing yet)."""
