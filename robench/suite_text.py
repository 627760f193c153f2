"""A suite's text: YAML read into data with the line of every path, and problems that name their place.

Every error a suite can get is located here: ``attacks[1].params.steps (line 12)``. The reader
refuses what would otherwise surface as a traceback or a hang: bytes that are not UTF-8, nesting
past :data:`MAX_DEPTH`, duplicate keys and alias bombs.
"""

from __future__ import annotations

import json

import yaml
from pydantic import BaseModel, ValidationError

from .errors import SuiteError


def format_loc(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


#: Deepest nesting of YAML collections a suite may use (a real suite needs about 6): deeper input
#: would exhaust Python's recursion in the YAML reader instead of giving a message.
MAX_DEPTH = 64
#: Values a suite may expand to through YAML aliases (a "billion laughs" file expands to 10**9).
MAX_VALUES = 100_000

_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _too_deep(text: str) -> int | None:
    """The 1-based line where nesting first exceeds MAX_DEPTH, or None (the scanner is iterative)."""
    depth = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                return token.start_mark.line + 1
        elif isinstance(token, _CLOSE):
            depth -= 1
    return None


def _walk_nodes(root: yaml.Node) -> tuple[dict[tuple, int], list[tuple[str, str]]]:
    """Line of each YAML path (tuple of keys / indices), and the problems of the node graph:
    duplicate keys (both lines), aliases that refer to themselves, alias expansion past MAX_VALUES."""
    index: dict[tuple, int] = {}
    problems: list[tuple[str, str]] = []
    seen: set[int] = set()
    stack = [(root, ())]
    while stack:  # iterative, and each node once: aliases neither loop nor multiply the work
        node, path = stack.pop()
        index.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple, int] = {}
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if key is not None and k.tag != "tag:yaml.org,2002:merge":
                    if (k.tag, key) in first:
                        problems.append((format_loc(path + (key,)) + f" (line {k.start_mark.line + 1})",
                                         f"duplicate key {key!r}: already given on line {first[(k.tag, key)]}; "
                                         "YAML would silently keep only the last one"))
                    else:
                        first[(k.tag, key)] = k.start_mark.line + 1
                    index.setdefault(path + (key,), k.start_mark.line + 1)
                stack.append((v, path + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, path + (i,)) for i, v in reversed(list(enumerate(node.value))))
    # Expanded size through aliases (memoised per node; a node met again while open is a cycle).
    size: dict[int, int] = {}
    open_: set[int] = set()
    work = [(root, False)]
    while work and not problems:
        node, done = work.pop()
        children = [c for kv in node.value for c in kv] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] > MAX_VALUES:
                problems.append((f"line {node.start_mark.line + 1}",
                                 f"this suite expands to more than {MAX_VALUES} values through YAML aliases (*name); write it out instead"))
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            problems.append((f"line {node.start_mark.line + 1}", "a YAML alias (*name) refers to the collection that contains it"))
            break
        open_.add(id(node))
        work.append((node, True))
        work.extend((c, False) for c in children if id(c) not in size)
    return index, problems


def line_index(text: str) -> dict[tuple, int]:
    """Map each YAML path (tuple of keys / indices) to its 1-based line number."""
    try:
        if _too_deep(text) is not None:
            return {}
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    return _walk_nodes(root)[0] if root is not None else {}


def line_note(lines: dict[tuple, int], loc: tuple) -> str:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return f" (line {lines[loc]})" if loc in lines else ""


def _describe(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "extra_forbidden":
        return "unknown field (not allowed here)"
    value = err.get("input")
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{msg}; got {shown}"


def pydantic_problems(exc: ValidationError, prefix: tuple, lines: dict[tuple, int]) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        # Unknown fields: tell what is allowed.
        out.append((format_loc(loc) + line_note(lines, loc), _describe(err)))
    return out


def allowed_fields(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields) or "(none)"


def decode_text(raw: bytes, path: str) -> str:
    """A suite file's bytes as text: UTF-8 (with or without BOM), else a SuiteError at the bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SuiteError(path, [(f"line {line}, column {column}",
                                 f"byte 0x{raw[exc.start]:02x} is not UTF-8 text; save the file as UTF-8")]) from None


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[str, str]:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (e.g. a NUL byte)
        line = text.count("\n", 0, exc.position) + 1
        ch = exc.character
        shown = f"0x{ch:02x}" if isinstance(ch, int) else f"U+{ord(ch):04X}"
        return (f"YAML syntax (line {line})", f"character {shown} is not allowed in YAML text")
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
    problem = getattr(exc, "problem", None) or str(exc)
    return (f"YAML syntax ({where})", str(problem))


def parse_yaml(text: str, path: str) -> tuple[dict, dict[tuple, int]]:
    """Parse a suite's text; SuiteError for syntax, nesting past MAX_DEPTH, duplicate keys and
    alias bombs, each with its line. Returns the data and the line of every YAML path."""
    try:
        deep = _too_deep(text)
        if deep is not None:
            raise SuiteError(path, [(f"line {deep}", f"collections nested more than {MAX_DEPTH} deep; a suite needs a handful of levels")])
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            lines, problems = _walk_nodes(root) if root is not None else ({}, [])
            if problems:
                raise SuiteError(path, problems)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise SuiteError(path, [_yaml_problem(exc, text)]) from None
    except RecursionError:  # guarded by MAX_DEPTH; kept so no input can ever surface a traceback
        raise SuiteError(path, [("YAML", f"nested too deeply to read (more than {MAX_DEPTH} levels)")]) from None
    if not isinstance(data, dict):
        raise SuiteError(path, [("", f"a suite must be a YAML mapping (name:, dataset:, models:, ...), got {type(data).__name__}")])
    return data, lines
