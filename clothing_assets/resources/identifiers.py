"""Names from configuration that become SQL identifiers, checked before any SQL is built."""

import re

# A stage name becomes an identifier in a warehouse (a Snowflake stage, a key in DuckDB's
# clothing_stages): letters, digits and underscores, not starting with a digit.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class InvalidIdentifierError(ValueError):
    """A name from configuration that is not a plain SQL identifier; refused before any SQL."""


def validate_identifier(name: object, what: str = "stage name") -> str:
    """Return `name` if it is a plain identifier, else raise InvalidIdentifierError."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: use letters, digits and underscores, not starting with "
            "a digit (at most 255 characters)"
        )
    return name
