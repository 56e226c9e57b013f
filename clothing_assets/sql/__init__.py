"""The project's SQL statements, one per file: `clothing_assets/sql/<dialect>/<verb_object>.sql`.

They are package data, read through `importlib.resources`, so an installed wheel (or a zip)
carries and finds them wherever it is installed, whatever the working directory.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from importlib.resources.abc import Traversable

# the package's own resource root: `SQL_ROOT / "duckdb" / "<name>.sql"`
SQL_ROOT: Traversable = importlib.resources.files(__name__)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _checked(dialect: str, name: str | None = None) -> None:
    if not _NAME.match(dialect) or (name is not None and not _NAME.match(name)):
        raise ValueError(f"invalid SQL file reference {dialect}/{name or ''}")


@functools.cache
def load_sql(dialect: str, name: str) -> str:
    """Return the statement in `clothing_assets/sql/<dialect>/<name>.sql`.

    Names are fixed in code; nothing user-supplied ever becomes part of a path or a statement.
    """
    _checked(dialect, name)
    resource = SQL_ROOT / dialect / f"{name}.sql"
    if not resource.is_file():
        raise FileNotFoundError(f"missing SQL file clothing_assets/sql/{dialect}/{name}.sql")
    return resource.read_text(encoding="utf-8")


def sql_names(dialect: str) -> list[str]:
    """The names (file names without `.sql`) of every statement of `dialect`, sorted."""
    _checked(dialect)
    folder = SQL_ROOT / dialect
    if not folder.is_dir():
        raise FileNotFoundError(f"no SQL folder clothing_assets/sql/{dialect}")
    return sorted(
        entry.name.removesuffix(".sql")
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".sql")
    )
