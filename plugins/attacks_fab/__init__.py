"""Built-in robench plugins: attacks_fab (being written; registers nothing yet)."""
