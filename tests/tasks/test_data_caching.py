"""Caching of ingest -> clean -> split through real Prefect (a temporary local API and database).

A second identical run is three cache hits; a changed cleaning parameter re-runs clean and split
but not ingest; a deleted output or a changed input file is never a hit.
"""

import json

import pytest
from prefect import flow
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from titlegen.params import CleanParams, ColumnMap, SplitParams
from titlegen.tasks.clean import CLEAN_FILE, clean_task
from titlegen.tasks.ingest import ingest_task
from titlegen.tasks.split import split_task


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("results")}):
            yield


@flow
def data_stages(dataset: str, out: str, clean: CleanParams) -> dict[str, str]:
    """The flow's first three calls, returning each task's final state name."""
    raw = ingest_task(dataset, None, ColumnMap(), f"{out}/data", return_state=True)
    cleaned = clean_task(raw.result()["path"], ColumnMap(), clean, f"{out}/data", return_state=True)
    splits = split_task(cleaned.result()["path"], SplitParams(), f"{out}/split", return_state=True)
    return {"ingest": raw.name, "clean": cleaned.name, "split": splits.name}


def _dataset(path, n=300, extra=""):
    places = ["台北", "新北", "桃園", "台中", "台南", "高雄", "基隆", "新竹", "嘉義", "屏東"]
    rows = [
        {"title": f"{places[i % 10]}第{i}號新聞標題{extra}",
         "content": f"{places[i % 10]}市政府今天發布第{i}號公告，{i * 37 % 1000}名市民參加活動，"
                    f"{i % 9 + 1}個行政區受到影響，市府表示編號{i * 131}的計畫將持續推動，預計{i % 12 + 1}月完成{extra}。"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_second_run_hits_and_clean_param_reruns_clean_and_split_only(prefect_api, tmp_path):
    dataset = _dataset(tmp_path / "articles.jsonl")
    out = str(tmp_path / "run")
    params = CleanParams(min_content_chars=50)
    assert data_stages(dataset, out, params) == {"ingest": "Completed", "clean": "Completed", "split": "Completed"}
    assert data_stages(dataset, out, params) == {"ingest": "Cached", "clean": "Cached", "split": "Cached"}
    changed = params.model_copy(update={"min_title_chars": 11})  # drops the 100 ten-character titles
    assert data_stages(dataset, out, changed) == {"ingest": "Cached", "clean": "Completed", "split": "Completed"}
    assert data_stages(dataset, out, changed) == {"ingest": "Cached", "clean": "Cached", "split": "Cached"}
    # A parameter change that leaves the clean file byte-identical re-runs clean only: split keys
    # on the clean file's content.
    same_output = changed.model_copy(update={"max_title_chars": 39})
    assert data_stages(dataset, out, same_output) == {"ingest": "Cached", "clean": "Completed", "split": "Cached"}


def test_missing_output_or_changed_input_is_never_a_hit(prefect_api, tmp_path):
    dataset = _dataset(tmp_path / "articles.jsonl")
    out = tmp_path / "run"
    params = CleanParams(min_content_chars=50)
    data_stages(dataset, str(out), params)
    (out / "data" / CLEAN_FILE).unlink()
    assert data_stages(dataset, str(out), params) == {"ingest": "Cached", "clean": "Completed", "split": "Cached"}
    _dataset(tmp_path / "articles.jsonl", extra="（更新）")  # same path, new content
    assert data_stages(dataset, str(out), params) == {"ingest": "Completed", "clean": "Completed", "split": "Completed"}
