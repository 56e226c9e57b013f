"""Load the project's SQL statements from `sql/<dialect>/<verb_object>.sql`, one per file."""

from __future__ import annotations

import functools
import re
from pathlib import Path

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@functools.cache
def load_sql(dialect: str, name: str) -> str:
    """Return the statement in `sql/<dialect>/<name>.sql`.

    Names are fixed in code; nothing user-supplied ever becomes part of a path or a statement.
    """
    if not (_NAME.match(dialect) and _NAME.match(name)):
        raise ValueError(f"invalid SQL file reference {dialect}/{name}")
    path = SQL_ROOT / dialect / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"missing SQL file {path}")
    return path.read_text()
