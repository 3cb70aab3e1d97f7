"""ingest: every bad input names the file, the row or column where known, the cause and the fix.
Each test writes the broken data it needs."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from titlegen.params import ColumnMap
from titlegen.tasks.ingest import RAW_FILE, ingest

TITLE, BODY = "颱風逼近 東部嚴防豪雨", "中央氣象署表示，颱風預計明天清晨登陸東部，各地應嚴防豪雨。"


def _ingest(path, tmp_path):
    return ingest(str(path), None, ColumnMap(), tmp_path / "out")


def _fails(path, tmp_path, *patterns):
    with pytest.raises(ValueError) as info:
        _ingest(path, tmp_path)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in: {message}"
    assert "DatasetGenerationError" not in message
    assert not (tmp_path / "out" / RAW_FILE).exists()
    return message


def test_big5_csv_names_the_encoding_and_the_fix(tmp_path):
    src = tmp_path / "export.csv"
    src.write_bytes(f"title,content\n{TITLE},{BODY}\n".encode("big5"))
    _fails(src, tmp_path, "export.csv", "not UTF-8", "line 2", "big5", "re-save the file as UTF-8", "iconv")


def test_semicolon_separated_csv_is_read(tmp_path):
    src = tmp_path / "export.csv"
    src.write_text(f"title;content;category\n{TITLE};{BODY}；其他;生活\n", encoding="utf-8")
    out = _ingest(src, tmp_path)
    assert out["rows"] == 1 and out["provenance"]["csv_separator"] == ";"
    assert pq.read_table(out["path"]).column("content").to_pylist() == [f"{BODY}；其他"]


def test_csv_with_a_broken_quote_names_the_line(tmp_path):
    src = tmp_path / "export.csv"
    lines = ["title,content"] + [f"標題{i},{BODY}" for i in range(3)] + [f'標題,"{BODY} 沒有結尾的引號', f"標題9,{BODY}"]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _fails(src, tmp_path, "export.csv", "malformed CSV at line", "quotation mark")


def test_csv_row_with_too_many_fields_names_the_line(tmp_path):
    src = tmp_path / "export.csv"
    src.write_text(f"title,content\n{TITLE},{BODY}\n{TITLE},{BODY},多出來的欄位\n", encoding="utf-8")
    _fails(src, tmp_path, "export.csv", "line 3 has 3 fields but the header has 2", "quote fields")


def test_jsonl_with_a_broken_quote_names_the_line(tmp_path):
    src = tmp_path / "export.jsonl"
    good = json.dumps({"title": TITLE, "content": BODY}, ensure_ascii=False)
    src.write_text(f'{good}\n{good}\n{{"title": "{TITLE}", "content": "{BODY}}}\n', encoding="utf-8")
    _fails(src, tmp_path, "export.jsonl", "line 3", "one complete JSON object")


def test_jsonl_with_array_lines_says_one_object_per_line(tmp_path):
    src = tmp_path / "export.jsonl"
    src.write_text(json.dumps([TITLE, BODY], ensure_ascii=False) + "\n", encoding="utf-8")
    _fails(src, tmp_path, "export.jsonl", "line 1 is an array, not a JSON object", '{"title"')


def test_json_array_of_objects_is_read(tmp_path):
    src = tmp_path / "export.json"
    src.write_text(json.dumps([{"title": TITLE, "content": BODY}] * 2, ensure_ascii=False), encoding="utf-8")
    assert _ingest(src, tmp_path)["rows"] == 2


def test_parquet_files_with_different_columns_name_both(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([{"title": TITLE, "content": BODY}]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"headline": TITLE, "content": BODY}]), folder / "b.parquet")
    _fails(folder, tmp_path, "do not have the same columns", "a.parquet", "b.parquet", "only in a.parquet: ['title']", "same columns")


def test_symlink_loop_is_named(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    _fails(loop, tmp_path, "symbolic link loop", "point `dataset` at the real file")


def test_fifo_is_not_an_empty_folder(tmp_path):
    fifo = tmp_path / "articles.jsonl"
    os.mkfifo(fifo)
    _fails(fifo, tmp_path, "articles.jsonl is a FIFO (named pipe), not a regular file")
    folder = tmp_path / "export"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jsonl")
    _fails(folder, tmp_path, "pipe.jsonl is a FIFO")


def test_unknown_failure_names_the_root_cause_not_the_wrapper(tmp_path):
    from titlegen.ingest_checks import diagnose

    try:
        try:
            raise KeyError("content")
        except KeyError as inner:
            raise RuntimeError("An error occurred while generating the dataset") from inner
    except RuntimeError as outer:
        message = str(diagnose("parquet", [tmp_path / "x.parquet"], outer))
    assert "KeyError" in message and "x.parquet" in message
