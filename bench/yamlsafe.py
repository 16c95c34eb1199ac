"""The one reader of user YAML (training configs and their overrides, manifest-build configs, test-set
YAMLs): ``yaml.safe_load`` plus the checks it lacks, each a one-line StudyError naming the file.

* Invalid YAML: the line and PyYAML's reason.
* Alias bombs ("billion laughs"): PyYAML shares an anchored node between its aliases, so loading is
  cheap, but everything that walks the result (``${VAR}`` expansion, validation, saving) meets every
  copy. The composed document is measured with aliases expanded (memoised per node, so the count
  itself is cheap) and refused beyond ``MAX_NODES``.
* ``mapping=True``: the top level must be a mapping (an empty document is ``{}``), not a list or a scalar.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.errors import StudyError

MAX_NODES = 100_000  # expanded nodes; a training config has a few hundred
MAX_BYTES = 10 << 20


def _expanded_size(root: yaml.Node, limit: int) -> int | None:
    """Nodes of the document with every alias expanded (stops counting past ``limit``); None for a
    recursive document (an alias inside its own anchor)."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if not done and id(node) in visiting:
            return None
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [x for kv in node.value for x in kv]
        else:
            sizes[id(node)] = 1
            continue
        if done:
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            visiting.discard(id(node))
            continue
        visiting.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(text: str, source: str, *, mapping: bool = True, max_nodes: int = MAX_NODES):
    """The document in ``text`` (from ``source``, for the messages), checked as the module says."""
    if len(text) > MAX_BYTES:
        raise StudyError(f"{source}: {len(text)} bytes of YAML, more than the {MAX_BYTES} a config may be")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        size = None if node is None else _expanded_size(node, max_nodes)
        if node is not None and size is None:
            raise StudyError(f"{source}: the YAML is recursive (an alias inside its own anchor); refusing it")
        if size is not None and size > max_nodes:
            raise StudyError(f"{source}: the YAML expands (through anchors and aliases) to more than {max_nodes} "
                             f"nodes; refusing it (an alias bomb?)")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(f"{source}{where}: invalid YAML ({reason})") from None
    if mapping:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise StudyError(f"{source}: the top level is a {type(data).__name__}, expected a mapping of fields "
                             f"(key: value)")
    return data


def load_yaml_file(path: str | Path, *, mapping: bool = True):
    """``load_yaml`` of a file (UTF-8); an unreadable file is a one-line StudyError too."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise StudyError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return load_yaml(text, str(path), mapping=mapping)
