"""Cleaning rules, one by one, on small zh-TW examples written here; then the whole stage."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import shared_data
from titlegen.params import CleanParams, ColumnMap
from titlegen.runs import read_jsonl
from titlegen.tasks import clean as C

BODY = (
    "行政院今天召開院會，通過勞動基準法修正草案，將送立法院審議。勞動部長表示，修法重點在於放寬加班工時上限，"
    "同時維持勞工每七天應有一天例假的原則。工商團體對此表示歡迎，勞工團體則批評修法犧牲勞工權益，將發起抗議。"
)


def _changed(fn, text: str) -> str:
    out = fn(text)
    assert out != text
    return out


# --- text rules ---------------------------------------------------------------------------

def test_html_entities_tags_and_redirect_script_removed():
    out = C.strip_html('市府表示<br/>將加強巡邏&nbsp;並<a href="x">公告</a>。window.location.href="https://udn.com/news/story/1";')
    assert out.replace(" ", "") == "市府表示將加強巡邏\xa0並公告。".replace(" ", "")
    assert "<" not in out and "window" not in out


def test_nfkc_narrows_letters_and_digits_but_keeps_chinese_punctuation():
    out = C.normalize_unicode("虛擬實境（ＶＲ）市場成長３０％，業者說：「明年更好！」真的？是；對～…")
    assert out == "虛擬實境（VR）市場成長30%，業者說：「明年更好！」真的？是；對～…"


def test_unicode_removes_zero_width_and_widens_nothing_else():
    assert C.normalize_unicode("陸軍\u200b儀隊\ufeff士兵\u3000倒地") == "陸軍儀隊士兵 倒地"


def test_urls_removed_with_the_brackets_they_leave():
    out = C.strip_urls("歡迎民眾至都市發展局（ http://www.udd.gov.taipei/ ）訂閱最新消息，IG:https://www.instagram.com/c.208/右二")
    assert "http" not in out and "（" not in out
    assert "右二" in out  # the URL stops at the first Chinese character


@pytest.mark.parametrize(
    "byline",
    ["（記者江慧珺／台北報導）", "〔記者張存薇／台東報導〕", "【苦勞網特約記者張宗坤/台北報導】", "【中央社／花蓮30日電】",
     "（即時新聞中心／綜合報導）", "【王怡文╱綜合報導】", "（曾盈瑜、符芳碩／台北報導）", "（更新：新增影片、動新聞）"],
)
def test_bylines_removed(byline):
    text = C.normalize_unicode(f"{byline}台東縣賓朗國小護理師牽線，送愛到蘭嶼。")
    assert C.strip_bylines(text).strip() == "台東縣賓朗國小護理師牽線，送愛到蘭嶼。"


def test_bracketed_prose_is_not_a_byline():
    text = "美國聯準會（Fed）主席表示，台電（公司）將說明。"
    assert C.strip_bylines(text) == text


@pytest.mark.parametrize(
    "credit",
    ["記者游明煌/翻攝", "記者曾吉松/攝影", "圖/TUMI提供", "圖/聯合報系資料照片", "聯合報系資料照", "翻攝臉書", "圖擷自 微博"],
)
def test_photo_credit_and_its_caption_removed(credit):
    text = f"市府今天宣布擴大補助。 員警幫忙發動機車。{credit} 老翁向員警道謝後離去。"
    out = C.strip_photo_credits(text)
    assert "員警幫忙發動機車" not in out  # the caption went with the credit
    assert "市府今天宣布擴大補助。" in out and "老翁向員警道謝後離去。" in out


@pytest.mark.parametrize("credit", ["（圖／消防局提供）", "(翻攝 YouTube)", "（資料照）", "（翻攝自臉書）", "(記者張瑞楨攝)"])
def test_bracketed_photo_credits_removed(credit):
    out = C.strip_photo_credits(f"瓦斯管破裂，商家走避，警消封路搶修中。{credit}")
    assert out.strip() == "瓦斯管破裂，商家走避，警消封路搶修中。"


def test_credit_words_in_prose_survive():
    text = "婦人（圖中）怒飆店員，氣溫達攝氏38度，他企圖逃逸。"
    assert C.strip_photo_credits(text) == text


@pytest.mark.parametrize(
    "tail",
    [" 相關新聞 你或許也想看 雲林垃圾無處可去", "【延伸閱讀】● 懷孕能不能吃冰？", "》自營商進出明細 》外資持股增減排行",
     " 出版時間:1454 更新時間:1944 曾馨瑩開球架式十足。", "(function(d, s, id) { var js; }(document, 'script', 'facebook-jssdk'));",
     " 推薦閱讀： 出版時間：15:07"],
)
def test_site_footer_cut(tail):
    assert C.strip_tail(BODY + tail).strip() == BODY


def test_related_news_inside_a_sentence_is_prose():
    text = "朱學恒也在臉書上分享相關新聞，並酸道請勿亂倒廢棄物。"
    assert C.strip_tail(text) == text


def test_title_label_removed():
    assert C.strip_title_label("【即時短評】政府立法助弱勢 低收入戶認定困難重重") == "政府立法助弱勢 低收入戶認定困難重重"
    assert C.strip_title_label("韓國瑜：【不】會參選") == "韓國瑜：【不】會參選"


def test_half_width_punctuation_in_chinese_text_widened():
    out = C.unify_punctuation("總統表示,兩岸應和平發展!他說:台灣(中華民國)很好?對;是")
    assert out == "總統表示，兩岸應和平發展！他說：台灣（中華民國）很好？對；是"


def test_ascii_context_punctuation_kept():
    text = "出版時間 10:41, Apple (AAPL) rose 3.5%, ok?"
    assert C.unify_punctuation(text) == text


def test_whitespace_in_article_and_title():
    body = "行政院長 賴清德 今天中午\u00a0與立委餐敘 。\n\n\n  他表示「很好」 ，  Russell Westbrook  也來了。"
    assert C.normalize_whitespace(C.normalize_unicode(body), title=False) == "行政院長賴清德今天中午與立委餐敘。\n他表示「很好」，Russell Westbrook 也來了。"
    assert C.normalize_whitespace("違停還敢大聲！  婦人怒飆\n店員 ", title=True) == "違停還敢大聲！ 婦人怒飆 店員"


def test_truncate_at_sentence_end_or_hard_cut():
    text = "第一句話說完了。第二句話也說完了。第三句很長很長很長"
    assert C.truncate_at_sentence(text, 20) == "第一句話說完了。第二句話也說完了。"
    assert C.truncate_at_sentence("沒有句號" * 20, 30) == ("沒有句號" * 20)[:30]
    assert C.truncate_at_sentence(text, 100) == text


# --- rows ---------------------------------------------------------------------------------

def test_clean_row_reasons():
    p = CleanParams(min_title_chars=6, max_title_chars=20, min_content_chars=30, max_content_chars=60)
    assert C.clean_row(None, BODY, p)[3] == "not_a_string"
    assert C.clean_row("行政院通過勞基法修正草案", 123, p)[3] == "not_a_string"
    assert C.clean_row("   ", BODY, p)[3] == "empty"
    assert C.clean_row("修法", BODY, p)[3] == "title_too_short"
    assert C.clean_row("行政院通過勞基法修正草案" * 3, BODY, p)[3] == "title_too_long"
    assert C.clean_row("行政院通過勞基法修正草案", "太短了。", p)[3] == "content_too_short"
    target, body, changes, reason = C.clean_row("行政院通過勞基法修正草案", BODY, p)
    assert reason is None and "truncated" in changes and len(body) <= 60 and body.endswith("。")
    dropped = C.clean_row("行政院通過勞基法修正草案", BODY, p.model_copy(update={"overlong_content": "drop"}))
    assert dropped[3] == "content_too_long"


def _raw(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _article(i: int) -> str:
    """An 80+ character article sharing under 40 % of its 5-grams with the others."""
    topics = ["颱風", "地震", "選舉", "股市", "棒球", "疫苗", "捷運", "房價", "核電", "年金", "觀光", "半導體"]
    a, b = topics[i % 12], topics[(i * 5 + 3) % 12]
    return (f"本報訊，第{i}號新聞：{a}議題延燒，{b}相關單位今天召開第{i * 7}次記者會說明最新進度。"
            f"官員指出，{a}與{b}的影響仍待評估，預計{i % 28 + 1}日公布完整報告，民眾可上網查詢編號{i * 131}的公告。")


def test_clean_counts_every_change_and_drop(tmp_path):
    rows = [{"title": f"第{i}則新聞標題測試", "content": _article(i), "category": "生活", "link": f"https://x/{i}"} for i in range(6)]
    rows.append({"title": "重複的新聞標題測試", "content": _article(0)})  # exact duplicate after cleaning
    rows.append({"title": "幾乎重複的新聞標題", "content": _article(1) + "（記者王小明／台北報導）"})  # cleans to an exact copy
    rows.append({"title": "近似重複的新聞標題", "content": _article(2).replace("公告。", "公告！")})
    rows.append({"title": None, "content": _article(9)})
    out = C.clean(_raw(tmp_path, rows), ColumnMap(), CleanParams(), tmp_path / "data")
    counts = out["counts"]
    assert out["rows"] == 6
    assert counts["exact_duplicate"] == 2 and counts["near_duplicate"] == 1 and counts["not_a_string"] == 1
    assert counts["byline"] == 1 and counts["punctuation"] == 0
    kept = read_jsonl(out["path"])
    assert {"id", "input", "target", "source_row", "category", "link"} <= set(kept[0])
    assert len({r["id"] for r in kept}) == 6
    report = json.loads(Path(out["report_path"]).read_text())
    assert report["rows_in"] == 10 and report["rows_out"] == 6
    table = C.counts_table(counts, 10, 6)
    assert {"reason": "near_duplicate", "kind": "dropped", "rows": 1} in table


def test_dataset_that_cleaning_empties_is_a_clear_error(tmp_path):
    rows = [{"title": "短", "content": "短文"}, {"title": None, "content": None}]
    with pytest.raises(ValueError, match=r"Cleaning left no rows of 2 .*title_too_short=1.*min_title_chars"):
        C.clean(_raw(tmp_path, rows), ColumnMap(), CleanParams(), tmp_path / "data")
    assert not (tmp_path / "data" / C.CLEAN_FILE).exists()


def test_duplicates_only_is_a_clear_error(tmp_path):
    rows = [{"title": "行政院通過勞基法修正草案", "content": BODY}] * 5
    with pytest.raises(ValueError, match="only duplicates"):
        C.clean(_raw(tmp_path, rows), ColumnMap(), CleanParams(), tmp_path / "data")
    assert not (tmp_path / "data" / C.CLEAN_FILE).exists()


def test_missing_column_names_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"columns found: \['headline', 'body'\].*`columns`"):
        C.clean(_raw(tmp_path, [{"headline": "x", "body": "y"}]), ColumnMap(), CleanParams(), tmp_path / "data")


@pytest.mark.parametrize("name,expect_min", [("zh-tw-news-2017", 2200), ("president-news", 9000)])
def test_clean_real_stand_in(tmp_path, name, expect_min):
    files = sorted((shared_data(name) / "data").glob("*.parquet"))
    out = C.clean(files[0], ColumnMap(), CleanParams(), tmp_path)
    rows = read_jsonl(out["path"])
    assert len(rows) >= expect_min
    joined = "\n".join(r["input"] for r in rows)
    for residue in ("window.location", "&nbsp", "http://", "https://", "／攝影", "/攝影", "》自營商進出明細"):
        assert residue not in joined, residue
    assert all(6 <= len(r["target"]) <= 40 and 80 <= len(r["input"]) <= 1200 for r in rows)
    assert joined.count("，") > 10 * len(rows)  # Chinese full-width commas survive NFKC


def test_report_counts_simplified_rows_and_converts_them(tmp_path, caplog):
    rows = [{"title": f"第{i}則新聞標題測試", "content": _article(i)} for i in range(4)]
    rows.append({"title": "寒流来袭 气象局提醒民众注意保暖", "content": (
        "记者王小明/台北报导受到强烈冷气团影响，今天清晨各地气温偏低，中央气象局表示，这波寒流将持续到周末，"
        "北部山区可能下雪，民众外出应注意保暖，开车上山的民众也要注意路面结冰，并随时留意最新的路况与天气资讯。图／翻摄自微博")})
    out = C.clean(_raw(tmp_path, rows), ColumnMap(), CleanParams(), tmp_path / "data")
    assert out["script"] == {"simplified_rows": 1, "simplified_share": 0.2, "action": "convert"}
    assert out["counts"]["simplified"] == 1 and "simplified_rows" not in out["counts"]
    report = json.loads(Path(out["report_path"]).read_text())
    assert report["script"]["simplified_rows"] == 1
    assert "1 of 5 rows (20.0%)" in caplog.text and "converted to Traditional" in caplog.text
    converted = [r for r in read_jsonl(out["path"]) if r["target"].startswith("寒流來襲")]
    assert converted and "記者" not in converted[0]["input"] and "翻攝" not in converted[0]["input"]
