"""Boilerplate families on made-up articles in forms the old rules missed (other outlets, other
lengths, simplified script), each checked with the cleaner and with the independent detector;
and prose that looks like boilerplate, which must survive."""

import pytest

from titlegen.boilerplate import strip_bylines, strip_photo_credits
from titlegen.boilerplate_check import carry_rates, families_in
from titlegen.footers import strip_script, strip_tail, strip_wire
from titlegen.headline import strip_repeated_headline, strip_title_label
from titlegen.params import CleanParams
from titlegen.tasks.clean import clean_row

PROSE = "受到強烈冷氣團影響，今天清晨各地氣溫偏低，中央氣象署表示，週末前都將維持濕冷天氣，民眾外出應注意保暖。"
MORE = "氣象署預估，下週一起冷空氣減弱，各地氣溫將逐漸回升，但早晚溫差仍大。"


@pytest.mark.parametrize("byline", [
    "記者王小明/台北報導", "記者王小明／台北報導", "國際中心/綜合報導", "記者李大華/採訪報導", "▲▼記者陳大同／高雄報導",
    "生活中心／綜合報導", "記者 張美麗 / 攝影 李大華 台北報導", "中央社記者林小華台北30日電", "记者王小明/台北报导",
    "記者王小明、林大華/台中報導",
])
def test_glued_bylines_removed_whatever_the_desk_or_place(byline):
    out = strip_bylines(byline + PROSE)
    assert out.strip() == PROSE
    assert "byline" in families_in("颱風假明天照常上班上課", byline + PROSE)
    assert "byline" not in families_in("颱風假明天照常上班上課", out)


def test_byline_forms_inside_prose_survive():
    text = "根據外媒/路透社報導，雙方已達成協議。他說，記者會將在明天舉行，地點在台北。"
    assert strip_bylines(text) == text


@pytest.mark.parametrize("credit", [
    "圖／翻攝自王小明臉書粉絲專頁與個人微博帳號", "（圖片/影片來源：某某電視台YouTube頻道）", "圖片來源：某網站",
    "（圖／記者林小明攝）", "（照片提供：某某基金會）", "攝影／王小明", "图／翻摄自微博", "（影片翻攝自抖音）", "（摄影：王小明）",
    "影片／翻攝自YouTube", "▲（圖／達志影像／美聯社）",
])
def test_photo_and_video_credits_of_any_length_removed(credit):
    out = strip_photo_credits(f"{PROSE} {credit} {MORE}")
    assert PROSE in out and MORE in out
    assert not any(c in out for c in "圖图攝摄翻"), out
    assert "photo_credit" not in families_in("颱風假明天照常上班上課", out)


def test_caption_before_a_credit_goes_but_prose_before_a_credit_stays():
    captioned = strip_photo_credits(f"{MORE}{PROSE}中國海軍航母遼寧艦。中新社資料照{MORE}")
    assert "遼寧艦" not in captioned and MORE + PROSE in captioned and captioned.endswith(MORE)
    prose_last = "市府官員表示，這項計畫明年一月上路，預計將有超過三萬名市民受惠，相關細節將另行公告。"
    kept = strip_photo_credits(f"{PROSE}{prose_last}翻攝網路")  # no space: the last sentence has commas, it is prose
    assert PROSE + prose_last in kept
    spaced = strip_photo_credits(f"{PROSE} 民眾在雪地中合影留念。翻攝網路 {MORE}")  # a space-delimited chunk is a caption
    assert "合影" not in spaced and PROSE in spaced and MORE in spaced


def test_caption_marker_line_removed_and_section_bullet_kept():
    out = strip_photo_credits(f"{PROSE}\n▲王小明昨天出席記者會。\n{MORE}")
    assert "王小明" not in out and "▲" not in out and MORE in out
    official = "總統今天表示：\n△有關國防部分：\n一、持續強化戰力。"
    assert strip_photo_credits(official) == official


@pytest.mark.parametrize("footer", [
    "延伸閱讀 颱風動態", "【延伸閱讀】颱風動態", "更多東森新聞報導", "更多 中時新聞網 報導：", "詳細新聞內容鎖定某某新聞",
    "直播請點此", "相關新聞：颱風動態", "延伸阅读：寒流来袭", "本文經《某某雜誌》授權轉載",
])
def test_site_footers_cut(footer):
    assert strip_tail(f"{PROSE}{MORE}{footer}").strip() == PROSE + MORE


def test_footer_words_inside_prose_survive():
    text = "新版網站在新聞稿中提供「推薦閱讀」功能，便利民眾延伸閱讀，網友也分享相關新聞，並提供更多新聞內容給讀者。"
    assert strip_tail(text) == text


@pytest.mark.parametrize("credit", ["（中央社）", "（中央社電）", "（中時新聞網）", "（編輯：王小明）1091230", "實習編輯／林小華", "核稿編輯：林小華", "圖文／CTWANT", "圖／", "（完）"])
def test_wire_credits_removed(credit):
    out = strip_wire(f"{PROSE}{MORE}{credit}")
    assert out.strip() == PROSE + MORE
    assert "wire_footer" not in families_in("颱風假明天照常上班上課", out)


def test_outlet_like_words_in_prose_survive():
    text = "網站設有「影音專區」（活動照片）、「新聞翦影」（相關新聞）等單元，並由總編輯：王大明負責。"
    assert strip_wire(text) == text


def test_script_code_left_after_tag_stripping_removed():
    code = 'var x = document.getElementById("ad-slot"); googletag.cmd.push(function() { googletag.display("ad"); });'
    out = strip_script(f"{PROSE} {code} {MORE}")
    assert "var" not in out and "googletag" not in out and PROSE in out and MORE in out
    plain = "Apple (AAPL) rose 3.5%; analysts expect more."
    assert strip_script(plain) == plain


@pytest.mark.parametrize("title,expected", [
    ("快訊/台北市大停電 捷運暫停營運", "台北市大停電 捷運暫停營運"),
    ("獨家／影／市府採購案疑點重重", "市府採購案疑點重重"),
    ("影/颱風逼近 東部嚴防豪雨", "颱風逼近 東部嚴防豪雨"),
    ("圖/寒流來襲 合歡山飄雪", "寒流來襲 合歡山飄雪"),
    ("懶人包/一次看懂年金改革", "一次看懂年金改革"),
    ("獨家直擊／市府採購案疑點重重", "市府採購案疑點重重"),
    ("颱風逼近 東部嚴防豪雨（影）", "颱風逼近 東部嚴防豪雨"),
    ("颱風逼近 東部嚴防豪雨 | 某某新聞網", "颱風逼近 東部嚴防豪雨"),
    ("柯文哲/我不會參選到底", "柯文哲/我不會參選到底"),  # a speaker, not a label
])
def test_title_labels(title, expected):
    assert strip_title_label(title) == expected


@pytest.mark.parametrize("body", [
    f"【颱風逼近 東部嚴防豪雨】{PROSE}", f"「颱風逼近 東部嚴防豪雨」{PROSE}", f"颱風逼近 東部嚴防豪雨\n{PROSE}",
    f"【快訊/颱風逼近 東部嚴防豪雨】{PROSE}",
])
def test_repeated_headline_removed(body):
    title = "颱風逼近 東部嚴防豪雨"
    assert "repeated_headline" in families_in(title, body)
    assert strip_repeated_headline(title, body) == PROSE


def test_headline_as_the_first_sentences_subject_is_prose():
    title = "中樞紀念國父誕辰典禮"
    body = "中樞紀念國父誕辰典禮，今天在總統府舉行，總統親臨主持。"
    assert strip_repeated_headline(title, body) == body
    assert "repeated_headline" not in families_in(title, body)


def test_whole_row_carries_nothing_after_cleaning():
    title = "快訊/颱風逼近 東部嚴防豪雨"
    body = (f"【颱風逼近 東部嚴防豪雨】▲▼記者王小明/台北報導{PROSE}（圖片/影片來源：某某電視台YouTube頻道）"
            f"{MORE}<script>var x = 1;</script>實習編輯／林小華 更多某某新聞報導")
    assert families_in(title, body) == {"byline", "photo_credit", "wire_footer", "script", "title_label", "repeated_headline"}
    target, cleaned, changes, reason = clean_row(title, body, CleanParams(min_content_chars=20))
    assert reason is None and target == "颱風逼近 東部嚴防豪雨"
    assert cleaned == PROSE + MORE
    assert families_in(target, cleaned) == set()
    assert {"byline", "photo_credit", "title_label", "repeated_headline"} <= changes


def test_simplified_row_converted_or_kept():
    title = "寒流来袭 气象局提醒民众注意保暖"
    body = "记者王小明/台北报导受到强烈冷气团影响，今天清晨各地气温偏低，气象局表示，周末前都将维持湿冷天气。 图／翻摄自微博"
    target, cleaned, changes, _ = clean_row(title, body, CleanParams(min_content_chars=20))
    assert "simplified" in changes and target == "寒流來襲 氣象局提醒民眾注意保暖"
    assert cleaned.startswith("受到強烈冷氣團影響") and "攝" not in cleaned and "記者" not in cleaned
    target, cleaned, changes, _ = clean_row(title, body, CleanParams(min_content_chars=20, simplified="keep"))
    assert "simplified" not in changes and "simplified_rows" in changes
    assert cleaned.startswith("受到强烈冷气团影响") and "摄" not in cleaned and "记者" not in cleaned


def test_traditional_row_is_never_converted():
    title = "台北市里長聯誼會 明天舉行"
    target, cleaned, changes, _ = clean_row(title, "台北市里長聯誼會明天在市府舉行，" + PROSE, CleanParams(min_content_chars=20))
    assert "simplified_rows" not in changes and target == title and cleaned.startswith("台北市里長")


def test_carry_rates_counts_rows_per_family():
    rows = [{"target": "影/颱風逼近 東部嚴防豪雨", "input": PROSE}, {"target": "颱風逼近 東部嚴防豪雨", "input": PROSE + "（中央社）"},
            {"target": "颱風逼近 東部嚴防豪雨", "input": PROSE}, {"target": "颱風逼近 東部嚴防豪雨", "input": PROSE}]
    rates = carry_rates(rows)
    assert rates["rows"] == 4 and rates["any"] == 0.5
    assert rates["per_family"]["title_label"] == 0.25 and rates["per_family"]["wire_footer"] == 0.25


def test_bracketed_prose_with_credit_words_survives_and_bracketed_credits_go():
    prose = "新機將搭載USB 3.0（提供USB Type-C轉接配件），售價不變。"
    assert strip_photo_credits(prose) == prose
    assert strip_photo_credits(f"{PROSE}（民眾提供）{MORE}").replace(" ", "") == PROSE + MORE
