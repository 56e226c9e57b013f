"""The README's configuration table is generated from `settings.VARIABLES` and kept current."""

from pathlib import Path

import pytest

from clothing_assets import docs_table
from clothing_assets.settings import VARIABLES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_one_settings_variables_generates():
    text = README.read_text(encoding="utf-8")
    assert docs_table.with_table(text) == text, (
        "README.md's settings table differs from settings.VARIABLES: "
        "run `python -m clothing_assets.docs_table`"
    )


def test_every_variable_appears_once_with_its_default():
    rows = docs_table.table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(VARIABLES)
    workers = next(row for row in rows if row.startswith("| `CLOTHING_DASK_WORKERS`"))
    assert "| min(4, cores) |" in workers
    assert "| `CLOTHING_MAX_FILE_BYTES` | `50000000` |" in docs_table.table()
    assert "| `SNOWFLAKE_ACCOUNT` | unset |" in docs_table.table()


def _readme(tmp_path: Path, block: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\n{docs_table.START}\n{block}\n{docs_table.END}\n\nafter\n")
    return path


def test_check_fails_on_a_stale_table_and_the_rewrite_fixes_only_the_block(tmp_path, capsys):
    path = _readme(tmp_path, "| variable | default | what |\n| `CLOTHING_GONE` | 1 | x |")
    assert docs_table.main(["--readme", str(path), "--check"]) == 1
    assert "python -m clothing_assets.docs_table" in capsys.readouterr().err
    assert "CLOTHING_GONE" in path.read_text()  # --check changes nothing

    assert docs_table.main(["--readme", str(path)]) == 0
    text = path.read_text()
    assert "CLOTHING_GONE" not in text
    assert text.startswith("# title\n\n") and text.endswith(f"{docs_table.END}\n\nafter\n")
    assert docs_table.table() in text
    assert docs_table.main(["--readme", str(path), "--check"]) == 0


@pytest.mark.parametrize("text", ["no markers", f"{docs_table.END}\nx\n{docs_table.START}\n"])
def test_a_readme_without_the_markers_is_refused_naming_them(tmp_path, capsys, text):
    path = tmp_path / "README.md"
    path.write_text(text)
    assert docs_table.main(["--readme", str(path)]) == 2
    assert docs_table.START in capsys.readouterr().err
    assert path.read_text() == text
