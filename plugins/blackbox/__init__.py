"""Built-in robench plugins: blackbox (being written; registers nothing yet)."""
