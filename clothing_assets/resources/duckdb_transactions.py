"""One DuckDB transaction, for the warehouse's statements that must land together."""

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The block's statements on `conn` as one transaction: committed when it ends, rolled back
    when it raises (an interrupt included), the error raised again."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
