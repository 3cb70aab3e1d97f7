"""Why a local dataset cannot be read, in words a user can act on: the file, the row or column
where known, the cause, and the fix.

`datasets` reports a bad file as `DatasetGenerationError: An error occurred while generating the
dataset`, with the real cause buried in a chained exception. `ingest` calls `diagnose` when
loading fails; it re-reads the files with the standard library and pyarrow, which name the line
and the problem (not UTF-8, a broken quote, a JSON array where an object belongs, ...).
`check_path` and `check_parquet_columns` run before loading: a path that is not a regular file
or folder (FIFO, socket, symlink loop), and parquet files whose columns differ.
"""

import codecs
import csv
import errno
import json
import os
import stat
from pathlib import Path

# Encodings a newsroom export is likely to be in when it is not UTF-8, tried in this order to
# name the likely one in the message.
_LIKELY_ENCODINGS = ("big5", "cp950", "gb18030", "utf-16", "shift_jis", "cp1252")
DELIMITERS = ",;\t|"


class IngestError(ValueError):
    """A dataset that cannot be ingested; the message names the file, the cause and the fix."""


def check_path(path: Path) -> None:
    """Raise `IngestError` for a symlink loop or a path that is neither a regular file nor a folder."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IngestError(
                f"{path}: a symbolic link loop (the link resolves back to itself: {os.readlink(path)!r}); "
                "point `dataset` at the real file or folder, or fix the link."
            ) from None
        if path.is_symlink():
            raise IngestError(f"{path}: a broken symbolic link (to {os.readlink(path)!r}); fix the link or point `dataset` at the real data.") from None
        raise
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        raise IngestError(
            f"{path} is {kind}, not a regular file or folder; write the data to a parquet, JSONL or CSV file "
            "and point `dataset` at it."
        )


def check_parquet_columns(files: list[Path]) -> None:
    """Raise `IngestError` when parquet files are unreadable or do not all have the same columns."""
    import pyarrow.parquet as pq

    schemas = {}
    for f in files:
        try:
            schemas[f] = pq.read_schema(f).names
        except Exception as exc:
            raise IngestError(
                f"{f} is not a readable parquet file ({type(exc).__name__}: {exc}); re-export it as parquet "
                "(e.g. `pandas.DataFrame.to_parquet`) or give it the extension of its real format."
            ) from None
    first, *rest = files
    for f in rest:
        if schemas[f] != schemas[first] and set(schemas[f]) != set(schemas[first]):
            only_a = sorted(set(schemas[first]) - set(schemas[f]))
            only_b = sorted(set(schemas[f]) - set(schemas[first]))
            raise IngestError(
                f"The parquet files do not have the same columns: {first.name} has {schemas[first]}, {f.name} has "
                f"{schemas[f]} (only in {first.name}: {only_a}; only in {f.name}: {only_b}). Give every file the same "
                "columns, or point `dataset` at one of them."
            )


def sniff_delimiter(path: Path) -> str:
    """The field separator of a CSV file, from its header line (`,` when unsure)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        header = f.readline()
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] > counts[","] else ","


def diagnose(fmt: str, files: list[Path], exc: BaseException) -> IngestError:
    """An `IngestError` naming the file, line and cause of a failed load, and the fix."""
    for f in (f for f in files if f.is_file()):
        problem = _encoding_problem(f) or (_csv_problem(f) if fmt == "csv" else _json_problem(f) if fmt == "json" else None)
        if problem:
            return IngestError(f"{f}: {problem}")
    cause = root_cause(exc)
    names = ", ".join(f.name for f in files[:5]) + (" ..." if len(files) > 5 else "")
    return IngestError(
        f"Could not read {names} as {fmt}: {type(cause).__name__}: {str(cause)[:300]}. Check that the files are valid "
        f"{fmt} with a header or one object per line, UTF-8 encoded, with the same columns in every file."
    )


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (`datasets` wraps the real error)."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _encoding_problem(path: Path) -> str | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset = 1, 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                bad = offset + err.start
                line += block[: err.start].count(b"\n")
                guess = _guess_encoding(path)
                hint = f"it looks like {guess}; " if guess else ""
                example = f" (e.g. `iconv -f {guess.upper()} -t UTF-8 {path.name} > {path.stem}-utf8{path.suffix}`)" if guess else ""
                return (
                    f"not UTF-8 text: byte 0x{block[err.start]:02x} at line {line} (byte offset {bad}) cannot be decoded "
                    f"as UTF-8 ({err.reason}); {hint}re-save the file as UTF-8{example}."
                )
            line += block.count(b"\n")
            offset += len(block)
    return None


def _guess_encoding(path: Path) -> str | None:
    raw = path.read_bytes()[: 1 << 20]
    for encoding in _LIKELY_ENCODINGS:
        try:
            raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return None


def _csv_problem(path: Path) -> str | None:
    delimiter = sniff_delimiter(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
            if not header:
                return "the file is empty or has no header line; the first line must name the columns (e.g. title,content)."
            for row in reader:
                if row and len(row) != len(header):
                    return (
                        f"row at line {reader.line_num} has {len(row)} fields but the header has {len(header)} "
                        f"({header}); quote fields that contain the separator {delimiter!r} or a line break with \"…\"."
                    )
        except csv.Error as err:
            return (
                f"malformed CSV at line {reader.line_num}: {err} (usually a field with an unclosed or stray "
                "quotation mark); close the quote, or double a quotation mark inside a quoted field (\"\")."
            )
    return None


def check_jsonl(files: list[Path]) -> None:
    """Raise `IngestError` for a JSONL file with a line that is not one JSON object (`datasets`
    would read array lines into a stray `text` column instead of failing)."""
    for f in files:
        problem = _encoding_problem(f) or _json_problem(f)
        if problem:
            raise IngestError(f"{f}: {problem}")


def _json_problem(path: Path) -> str | None:
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            return f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}; fix the file or write one JSON object per line (JSONL)."
        if not all(isinstance(item, dict) for item in data):
            return "a JSON array whose items are not all objects; write one object per line: {\"title\": …, \"content\": …}."
        return None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            return (
                f"line {number}, column {err.colno}: {err.msg} (a broken quote or a line break inside a value); "
                "each line must be one complete JSON object: escape quotes as \\\" and line breaks as \\n."
            )
        if not isinstance(value, dict):
            kind = "an array" if isinstance(value, list) else type(value).__name__
            return (
                f"line {number} is {kind}, not a JSON object; each line must be one object with named fields, "
                "e.g. {\"title\": \"…\", \"content\": \"…\"}."
            )
    return None
