"""Built-in robench plugins: basic (being written; registers nothing yet)."""
