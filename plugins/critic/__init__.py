"""Built-in robench plugins: critic (being written; registers nothing yet)."""
