"""Path comparisons shared by validation at the edge and the agent's engine (no wire types)."""


def is_within(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies below it (both absolute, compared by component)."""
    path_parts = [part for part in path.split("/") if part not in ("", ".")]
    root_parts = [part for part in root.split("/") if part not in ("", ".")]
    return path_parts[: len(root_parts)] == root_parts
