"""The one reader of CSV and JSONL tables (manifests, labelling, corpora, benchmarks).

A file may be gzip-compressed (``.csv.gz``, as MIMIC ships its tables), start with a UTF-8 byte-order
mark (what Excel writes) and end its lines with CRLF. It is CSV when its name ends with ``.csv`` or
``.csv.gz``, else JSONL. Rows are numbered from 1 at the first data row (the CSV header and blank lines
do not count; ``read_cells``, which knows no header, counts every line); each problem is one line naming
the file, the row and, where there is one, the column.
"""
from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

UNDECODABLE = "cannot be decoded as UTF-8 (save the file as UTF-8)"


@dataclass(slots=True)
class Record:
    """One data row: ``data`` (column -> value), or None and the ``error`` that makes the row bad."""
    row: int  # 1-based data row
    data: dict | None
    raw: str | list[str]  # the JSONL line without its line end, or the CSV cells
    error: str | None = None  # e.g. "column 'report' cannot be decoded as UTF-8" (no row number)


def _open(path: Path):
    """The file as text: gunzipped when it ends with .gz, without a leading BOM, line ends as written,
    a byte that is not UTF-8 kept as a surrogate character (``_undecodable`` finds it)."""
    opener = gzip.open if Path(path).name.lower().endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _undecodable(cells) -> str | None:
    """The error naming the first (column, value) of ``cells`` whose value holds a byte that is not UTF-8."""
    return next((f"column {column!r} {UNDECODABLE}" for column, value in cells
                 if isinstance(value, str) and not _utf8(value)), None)


def _shown(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bad(row: int, raw: str | list[str], error: str) -> Record:
    """A bad row, its bytes that are not UTF-8 shown as U+FFFD (so that it can be written back)."""
    return Record(row, None, _shown(raw) if isinstance(raw, str) else [_shown(c) for c in raw], error)


def _lines(path: Path, f):
    """The cells of each line of the CSV ``f``; a line the csv module cannot split (e.g. an unclosed quote
    that runs past its field limit) is a DataError naming the line it starts on."""
    reader, start = csv.reader(f), 1
    try:
        for cells in reader:
            yield cells
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path} line {start}: {exc}") from None


def read_cells(path: Path) -> list[list[str]]:
    """The cells of every line of a CSV as they are, header and blank lines included (MRNet's label
    files have no header); a cell that cannot be decoded is a DataError naming its line and column."""
    with _open(path) as f:
        lines = list(_lines(path, f))
    for n, cells in enumerate(lines, start=1):
        if error := _undecodable((i, cell) for i, cell in enumerate(cells, start=1)):
            raise DataError(f"{path} row {n}: {error}")
    return lines


def _csv_records(path: Path, f, required) -> tuple[list[str], list[Record]]:
    reader = _lines(path, f)
    header = next(reader, [])
    if error := _undecodable((i, name) for i, name in enumerate(header, start=1)):
        raise DataError(f"{path} header: {error}")
    if missing := [c for c in required if c not in header]:
        raise DataError(f"{path} has no column {', '.join(map(repr, missing))} (columns: {', '.join(header)})")
    records = []
    for cells in reader:
        if not cells:
            continue
        n = len(records) + 1
        if len(cells) > len(header):
            records.append(_bad(n, cells, f"{len(cells)} cells, the header names {len(header)} columns"))
            continue
        data = dict(zip(header, cells + [""] * (len(header) - len(cells))))
        error = _undecodable(data.items())
        records.append(_bad(n, cells, error) if error else Record(n, data, cells))
    return header, records


def _jsonl_records(f) -> tuple[list[str], list[Record]]:
    columns, records = {}, []
    for line in f:
        if not line.strip():
            continue
        n, line = len(records) + 1, line.rstrip("\r\n")
        try:
            data = json.loads(line)
            error = None if isinstance(data, dict) else "not a JSON object"
        except json.JSONDecodeError as exc:
            data, error = None, f"invalid JSON ({exc.msg})"
        if error is None and not _utf8(line):
            error = _undecodable(data.items()) or UNDECODABLE
        if error:
            records.append(_bad(n, line, error))
            continue
        columns.update(dict.fromkeys(data))
        records.append(Record(n, data, line))
    return list(columns), records


def read_table(path: Path, required: tuple[str, ...] = ()) -> tuple[list[str], list[Record]]:
    """(columns, records) of a CSV (columns: its header) or JSONL file (the keys in order of first
    appearance). A bad row is a Record with an ``error``; a CSV header without a ``required`` column is a
    DataError naming the file and the column. A CSV row shorter than the header is filled with ""."""
    is_csv = Path(path).name.lower().removesuffix(".gz").endswith(".csv")
    with _open(path) as f:
        return _csv_records(path, f, required) if is_csv else _jsonl_records(f)


def read_rows(path: Path, name: str, required: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a CSV or JSONL file as dicts, for a source that must be whole: its first bad row is a
    DataError naming ``name`` (the dataset), the file, the row and the column."""
    try:
        _, records = read_table(path, required)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    if bad := next((r for r in records if r.error), None):
        raise DataError(f"{name}: {path} row {bad.row}: {bad.error}")
    return [r.data for r in records]
