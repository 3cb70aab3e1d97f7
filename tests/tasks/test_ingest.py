"""ingest: local files and folders of every supported format, the Hub path offline, and bad input."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import shared_data
from titlegen.params import ColumnMap
from titlegen.tasks.ingest import PROVENANCE_FILE, RAW_FILE, ingest, looks_like_path

ROWS = [
    {"title": "颱風逼近 東部嚴防豪雨", "content": "中央氣象署表示，颱風預計明天清晨登陸東部。", "category": "生活"},
    {"title": "捷運環狀線北環段動工", "content": "台北市政府宣布捷運環狀線北環段動工，預計六年後通車。", "category": "地方"},
]


def _write(tmp_path: Path, fmt: str, rows=ROWS) -> Path:
    path = tmp_path / f"articles.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_local_file_each_format(tmp_path, fmt):
    src = _write(tmp_path, fmt)
    out = ingest(str(src), None, ColumnMap(), tmp_path / "data")
    assert out["rows"] == 2
    table = pq.read_table(out["path"])
    assert table.column("title").to_pylist() == [r["title"] for r in ROWS]
    prov = json.loads((tmp_path / "data" / PROVENANCE_FILE).read_text())
    assert prov == out["provenance"]
    assert prov["kind"] == "local" and prov["rows"] == 2 and set(prov["columns"]) == {"title", "content", "category"}
    (digest,) = prov["files"].values()
    assert len(digest) == 64


def test_folder_in_hub_layout_and_plain_folder(tmp_path):
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS), hub / "train-00000-of-00001.parquet")
    assert ingest(str(tmp_path / "hub"), None, ColumnMap(), tmp_path / "a")["rows"] == 2
    plain = tmp_path / "plain" / "part"
    plain.mkdir(parents=True)
    _write(plain, "jsonl")
    (plain / "more.jsonl").write_text(json.dumps(ROWS[0], ensure_ascii=False) + "\n", encoding="utf-8")
    assert ingest(str(tmp_path / "plain"), None, ColumnMap(), tmp_path / "b")["rows"] == 3


def test_column_mapping(tmp_path):
    rows = [{"headline": r["title"], "body": r["content"]} for r in ROWS]
    src = _write(tmp_path, "parquet", rows)
    out = ingest(str(src), None, ColumnMap(input="body", target="headline"), tmp_path / "data")
    assert out["provenance"]["column_map"] == {"input": "body", "target": "headline"}


def test_nonexistent_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*`dataset`"):
        ingest(str(tmp_path / "nope.parquet"), None, ColumnMap(), tmp_path / "data")
    with pytest.raises(FileNotFoundError):
        ingest("../no/such/folder", None, ColumnMap(), tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_hub_id_versus_path():
    assert not looks_like_path("AWeirdDev/zh-tw-pts-articles-sm")
    assert not looks_like_path("squad")
    assert looks_like_path("./data") and looks_like_path("a/b/c") and looks_like_path("x.csv")


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_unknown_hub_id_offline_fails_fast_and_clearly(tmp_path, monkeypatch, env):
    import time

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # huggingface_hub reads these at import: reload its constants so the test's env applies.
    import importlib

    from huggingface_hub import constants

    importlib.reload(constants)
    started = time.monotonic()
    try:
        with pytest.raises(ValueError, match=r"Could not load 'nobody/no-such-dataset'.*local parquet/JSONL/CSV"):
            ingest("nobody/no-such-dataset", None, ColumnMap(), tmp_path / "data")
    finally:
        monkeypatch.undo()
        importlib.reload(constants)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "data").exists()


def test_wrong_format(tmp_path):
    bad = tmp_path / "articles.parquet"
    bad.write_text("這不是 parquet 檔案", encoding="utf-8")
    with pytest.raises(ValueError, match="articles.parquet is not a readable parquet file.*re-export it"):
        ingest(str(bad), None, ColumnMap(), tmp_path / "data")
    other = tmp_path / "articles.txt"
    other.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        ingest(str(other), None, ColumnMap(), tmp_path / "data")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ValueError, match="holds no parquet"):
        ingest(str(empty_dir), None, ColumnMap(), tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("missing", ["content", "title"])
def test_missing_column_lists_found_and_names_parameter(tmp_path, missing):
    rows = [{k: v for k, v in r.items() if k != missing} for r in ROWS]
    src = _write(tmp_path, "parquet", rows)
    with pytest.raises(ValueError, match=r"lacks the column.*columns found: \[.*\].*`columns`"):
        ingest(str(src), None, ColumnMap(), tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_non_string_column_rejected(tmp_path):
    src = _write(tmp_path, "parquet", [{"title": 1, "content": "文章"}, {"title": 2, "content": "文章"}])
    with pytest.raises(ValueError, match="must hold text.*'title' is int64"):
        ingest(str(src), None, ColumnMap(), tmp_path / "data")


def test_nulls_pass_ingest_for_clean_to_count(tmp_path):
    src = _write(tmp_path, "jsonl", [*ROWS, {"title": None, "content": None, "category": None}])
    assert ingest(str(src), None, ColumnMap(), tmp_path / "data")["rows"] == 3


def test_empty_dataset(tmp_path):
    src = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"title": pa.array([], pa.string()), "content": pa.array([], pa.string())}), src)
    with pytest.raises(ValueError, match="has no rows"):
        ingest(str(src), None, ColumnMap(), tmp_path / "data")
    assert not (tmp_path / "data" / RAW_FILE).exists()


@pytest.mark.parametrize("name,rows", [("zh-tw-news-2017", 2424), ("president-news", 12353)])
def test_real_stand_in(tmp_path, name, rows):
    out = ingest(str(shared_data(name)), None, ColumnMap(), tmp_path)
    assert out["rows"] == rows
    assert out["provenance"]["format"] == "parquet" and len(out["provenance"]["files"]) == 1


# --- publisher splits -----------------------------------------------------------------------

def _rows(prefix: str, n: int) -> list[dict]:
    return [{"title": f"{prefix}新聞標題{i}", "content": f"{prefix}第{i}則新聞內容。"} for i in range(n)]


@pytest.mark.parametrize("layout", ["data/{split}-00000-of-00001.parquet", "{split}-00000-of-00001.parquet", "{split}/part-0.parquet",
                                    "news_{split}.parquet"])
def test_publisher_splits_kept_and_reported(tmp_path, layout):
    root = tmp_path / "hub"
    for split, n in (("train", 5), ("test", 2)):
        path = root / layout.format(split=split)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(_rows(split, n)), path)
    out = ingest(str(root), None, ColumnMap(), tmp_path / "data")
    table = pq.read_table(out["path"])
    by_split = dict(zip(table.column("title").to_pylist(), table.column("publisher_split").to_pylist()))
    assert [t for t, s in by_split.items() if s == "test"] == ["test新聞標題0", "test新聞標題1"]
    assert sum(s == "train" for s in by_split.values()) == 5
    files = out["provenance"]["splits"]
    assert [Path(f).name for f in files["test"]] == [Path(layout.format(split="test")).name]
    assert set(files) == {"train", "test"}


def test_a_lone_test_file_is_all_the_data(tmp_path):
    src = tmp_path / "test.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    out = ingest(str(src), None, ColumnMap(), tmp_path / "data")
    assert "splits" not in out["provenance"] and "publisher_split" not in pq.read_table(out["path"]).column_names


def test_unnamed_parts_are_one_pool(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for k in range(2):
        pq.write_table(pa.Table.from_pylist(_rows(f"p{k}", 2)), folder / f"part-{k}.parquet")
    out = ingest(str(folder), None, ColumnMap(), tmp_path / "data")
    assert "splits" not in out["provenance"] and "publisher_split" not in pq.read_table(out["path"]).column_names


def test_hub_dataset_with_a_test_split_keeps_it(tmp_path, monkeypatch):
    import datasets

    from titlegen.tasks import ingest as I

    loaded = datasets.DatasetDict({"train": datasets.Dataset.from_list(_rows("train", 3)),
                                   "test": datasets.Dataset.from_list(_rows("test", 2)),
                                   "unlabeled": datasets.Dataset.from_list(_rows("u", 1))})
    monkeypatch.setattr(I, "hub_commit", lambda dataset, revision: "abc123")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: loaded)
    out = ingest("someone/news", None, ColumnMap(), tmp_path / "data")
    splits = pq.read_table(out["path"]).column("publisher_split").to_pylist()
    assert splits == ["train"] * 3 + ["test"] * 2
    assert set(out["provenance"]["splits"]) == {"train", "test"} and out["provenance"]["ignored_splits"] == ["unlabeled"]


# --- re-runs --------------------------------------------------------------------------------

def test_new_raw_data_remove_stale_downstream_outputs(tmp_path):
    src = _write(tmp_path, "jsonl")
    out = tmp_path / "run" / "data"
    clean_file, split_dir = out / "clean.jsonl", tmp_path / "run" / "split"
    stale = [str(clean_file), str(split_dir)]
    ingest(str(src), None, ColumnMap(), out, stale)
    clean_file.write_text("{}\n")
    split_dir.mkdir()
    (split_dir / "train.jsonl").write_text("{}\n")
    ingest(str(src), None, ColumnMap(), out, stale)  # same data: downstream outputs still valid
    assert clean_file.exists() and split_dir.exists()
    _write(tmp_path, "jsonl", ROWS[:1])  # new content at the same path
    ingest(str(src), None, ColumnMap(), out, stale)
    assert not clean_file.exists() and not split_dir.exists()


def test_data_fingerprint_follows_content_not_path(tmp_path):
    from titlegen.tasks.ingest import data_fingerprint

    src = _write(tmp_path, "jsonl")
    before = data_fingerprint({"dataset": str(src)})
    _write(tmp_path, "jsonl", ROWS[:1])
    assert data_fingerprint({"dataset": str(src)}) != before


def test_the_raw_parquet_and_its_provenance_are_readable_by_other_users(tmp_path, umask_022):
    import stat

    out = ingest(str(_write(tmp_path, "jsonl")), None, ColumnMap(), tmp_path / "data")
    for path in (Path(out["path"]), tmp_path / "data" / PROVENANCE_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # not mkstemp's 0600
