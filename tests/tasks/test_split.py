"""split: determinism, no near copies across splits, size policy, bad input; then the real data."""

import json
from pathlib import Path

import pytest

from tests.conftest import shared_data
from titlegen.neardup import near_duplicate_pairs
from titlegen.params import CleanParams, ColumnMap, SplitParams
from titlegen.runs import fingerprint, file_sha256, read_jsonl, write_jsonl
from titlegen.tasks.split import SPLITS, split, target_sizes

PLACES = ["台北", "新北", "桃園", "台中", "台南", "高雄", "基隆", "新竹", "嘉義", "屏東", "宜蘭", "花蓮", "台東", "澎湖", "金門", "馬祖"]
EVENTS = ["豪雨", "停電", "地震", "火警", "車禍", "淹水", "寒流", "乾旱", "罷工", "選舉", "演唱會", "馬拉松", "燈會", "展覽", "球賽", "市集"]


def _article(i: int) -> str:
    place, event = PLACES[i % 16], EVENTS[(i // 16) % 16]
    return f"{place}{event}第{i}報：{place}市政府{i * 37 % 1000}號公告指出，{event}影響{i % 9 + 1}個行政區，{i * 13 % 97}名民眾受影響，相關單位持續處理。"


def _clean_file(tmp_path: Path, n: int, copies_of: tuple[int, ...] = ()) -> Path:
    rows = [{"id": fingerprint(_article(i), 16), "input": _article(i), "target": f"{PLACES[i % 16]}新聞{i}"} for i in range(n)]
    for k, i in enumerate(copies_of):  # near copies: one phrase changed
        text = _article(i).replace("相關單位持續處理", "相關單位仍在處理")
        rows.append({"id": fingerprint(text, 16), "input": text, "target": f"近似{k}"})
    return write_jsonl(tmp_path / "clean.jsonl", rows)


def test_sizes_policy_for_1400_rows():
    assert target_sizes(1400, SplitParams()) == {"train": 1120, "validation": 140, "test": 140}
    assert target_sizes(100, SplitParams()) == {"train": 60, "validation": 20, "test": 20}  # min_eval_rows wins
    with pytest.raises(ValueError, match="too few to split.*min_eval_rows"):
        target_sizes(70, SplitParams())


def test_deterministic_and_seeded(tmp_path):
    src = _clean_file(tmp_path, 300)
    a = split(src, SplitParams(), tmp_path / "a")
    b = split(src, SplitParams(), tmp_path / "b")
    c = split(src, SplitParams(seed=1), tmp_path / "c")
    for name in SPLITS:
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "c" / "test.jsonl").read_bytes()
    assert a["sizes"] == {"train": 240, "validation": 30, "test": 30}


def test_row_order_does_not_change_the_split(tmp_path):
    src = _clean_file(tmp_path, 200)
    rows = read_jsonl(src)
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", rows[::-1])
    split(src, SplitParams(), tmp_path / "a")
    split(shuffled, SplitParams(), tmp_path / "b")
    for name in SPLITS:
        ids_a = {r["id"] for r in read_jsonl(tmp_path / "a" / f"{name}.jsonl")}
        ids_b = {r["id"] for r in read_jsonl(tmp_path / "b" / f"{name}.jsonl")}
        assert ids_a == ids_b


def test_no_near_duplicates_across_splits(tmp_path):
    src = _clean_file(tmp_path, 200, copies_of=tuple(range(0, 200, 4)))
    split(src, SplitParams(), tmp_path / "out")
    where = {}
    for name in SPLITS:
        for r in read_jsonl(tmp_path / "out" / f"{name}.jsonl"):
            where[r["input"]] = name
    texts = list(where)
    pairs = near_duplicate_pairs(texts, 0.5)
    assert len(pairs) >= 50  # the copies are there...
    assert all(where[texts[i]] == where[texts[j]] for i, j, _ in pairs)  # ...and never split apart


def test_manifest(tmp_path):
    src = _clean_file(tmp_path, 120)
    out = split(src, SplitParams(), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["sizes"] == out["sizes"] and manifest["seed"] == 3407
    assert manifest["input"]["sha256"] == file_sha256(src)
    for name in SPLITS:
        assert manifest["sha256"][name] == file_sha256(tmp_path / "out" / f"{name}.jsonl")
    assert (tmp_path / "out" / ".complete").exists()


def test_split_that_would_leave_a_split_empty_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="too few to split"):
        split(_clean_file(tmp_path, 3), SplitParams(min_eval_rows=1, validation_fraction=0.1, test_fraction=0.1), tmp_path / "out")
    # Every article a near copy of one: a single group, so test and validation stay empty.
    base = _article(0)
    rows = [{"id": f"{k:04d}", "input": base + "。" * (k % 5) + str(k % 2), "target": f"標題{k}"} for k in range(100)]
    same = write_jsonl(tmp_path / "same.jsonl", rows)
    with pytest.raises(ValueError, match="left a split too small.*near_duplicate_threshold"):
        split(same, SplitParams(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _publisher_file(tmp_path: Path, n: int, test: range, validation: range = range(0), copies_of_test: tuple[int, ...] = ()) -> Path:
    rows = read_jsonl(_clean_file(tmp_path, n))
    for i, r in enumerate(rows):
        r["publisher_split"] = "test" if i in test else "validation" if i in validation else "train"
    for k, i in enumerate(copies_of_test):  # a training row that is a near copy of a publisher test row
        text = _article(i).replace("相關單位持續處理", "相關單位仍在處理")
        rows.append({"id": fingerprint(text, 16), "input": text, "target": f"近似{k}", "publisher_split": "train"})
    return write_jsonl(tmp_path / "publisher.jsonl", rows)


def test_publisher_test_split_is_the_test_split_and_never_trains(tmp_path):
    src = _publisher_file(tmp_path, 200, test=range(150, 200), copies_of_test=(150, 151))
    out = split(src, SplitParams(), tmp_path / "out")
    test = read_jsonl(tmp_path / "out" / "test.jsonl")
    assert {r["id"] for r in test} == {r["id"] for r in read_jsonl(src)[150:200]}
    assert out["sizes"]["test"] == 50  # the publisher's size, not 10 % of the rows
    trained = {r["input"] for r in read_jsonl(tmp_path / "out" / "train.jsonl")}
    assert not trained & {r["input"] for r in test}
    assert "近似0" not in {r["target"] for s in SPLITS for r in read_jsonl(tmp_path / "out" / f"{s}.jsonl")}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["publisher_splits"] == {"given": {"test": 50}, "drawn_from_train": ["validation"],
                                            "train_rows_dropped_as_near_copies": 2}
    assert out["sizes"]["validation"] == 20 and out["sizes"]["train"] == 130


def test_publisher_validation_and_test_both_kept(tmp_path):
    src = _publisher_file(tmp_path, 120, test=range(0, 10), validation=range(10, 15))
    out = split(src, SplitParams(), tmp_path / "out")
    assert out["sizes"] == {"train": 105, "validation": 5, "test": 10}


def test_ingest_clean_split_keep_a_folder_s_test_files_out_of_training(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from titlegen.tasks.clean import clean
    from titlegen.tasks.ingest import ingest

    data = tmp_path / "export" / "data"
    data.mkdir(parents=True)
    rows = [{"title": f"{PLACES[i % 16]}新聞標題第{i}則", "content": _article(i)} for i in range(150)]
    pq.write_table(pa.Table.from_pylist(rows[:120]), data / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[120:]), data / "test-00000-of-00001.parquet")
    raw = ingest(str(tmp_path / "export"), None, ColumnMap(), tmp_path / "run" / "data")
    cleaned = clean(raw["path"], ColumnMap(), CleanParams(min_content_chars=20), tmp_path / "run" / "data")
    split(cleaned["path"], SplitParams(), tmp_path / "run" / "split")
    test_targets = {r["target"] for r in read_jsonl(tmp_path / "run" / "split" / "test.jsonl")}
    assert test_targets == {r["title"] for r in rows[120:]}
    trained = {r["target"] for r in read_jsonl(tmp_path / "run" / "split" / "train.jsonl")}
    assert not trained & test_targets


@pytest.mark.parametrize("name", ["zh-tw-news-2017", "president-news"])
def test_real_stand_in_end_to_end(tmp_path, name):
    from titlegen.tasks.clean import clean
    from titlegen.tasks.ingest import ingest

    raw = ingest(str(shared_data(name)), None, ColumnMap(), tmp_path / "data")
    cleaned = clean(raw["path"], ColumnMap(), CleanParams(), tmp_path / "data")
    out = split(cleaned["path"], SplitParams(), tmp_path / "split")
    assert sum(out["sizes"].values()) == cleaned["rows"]
    assert min(out["sizes"]["validation"], out["sizes"]["test"]) >= round(0.1 * cleaned["rows"]) - 5
    ids = [r["id"] for s in SPLITS for r in read_jsonl(tmp_path / "split" / f"{s}.jsonl")]
    assert len(ids) == len(set(ids))
