"""Built-in robench plugins: convex (being written; registers nothing yet)."""
