"""Built-in robench plugins: cnn (being written; registers nothing yet)."""
