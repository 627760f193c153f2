"""Every path (tuple of keys and indices) into a parsed YAML document: what the suite fuzzers mutate."""

from __future__ import annotations


def yaml_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from yaml_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from yaml_paths(v, prefix + (i,))
