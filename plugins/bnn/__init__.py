"""Built-in robench plugins: bnn (being written; registers nothing yet)."""
