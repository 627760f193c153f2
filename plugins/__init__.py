"""robench's built-in plugins (importable as ``robench_plugins``).

Each subpackage is registered through the ``robench`` entry-point group in ``pyproject.toml``,
exactly like a third-party plugin.
"""
