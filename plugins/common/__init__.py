"""Shared code for built-in plugins (not a plugin itself): torch training loops and helpers."""
