"""Detectors of news boilerplate left in cleaned rows, one per family, kept apart from the cleaner.

The cleaner (`titlegen.boilerplate`) removes boilerplate; this module only looks for it, with
patterns written independently and deliberately wider, so a bench or a test can ask "what share
of cleaned rows still carries a byline, a credit, ...?" without grading the cleaner by its own
rules. Simplified and Traditional forms are both matched. `families_in(title, body)` names the
families a row carries; `carry_rates(rows)` gives the share of rows per family and for any.

Families:
- `byline`: a reporter or desk byline (`記者王小明/台北報導`, `國際中心/綜合報導`, `中央社記者…電`).
- `wire_footer`: agency credits and site footers (`（中央社）`, `延伸閱讀`, `更多○○報導`,
  `詳細新聞內容鎖定…`, `直播請點此`, `實習編輯/…`, `圖文/…`, `責任編輯`, a dangling `圖/`).
- `photo_credit`: photo and video credits (`圖/翻攝自…`, `（圖片/影片來源：…）`, `攝影/…`, `▲`).
- `script`: JavaScript or CSS left behind (`var x =`, `document.getElementById`, `function(`).
- `title_label`: a label at the start of the title (`快訊/`, `獨家/`, `影/`, `【…】`).
- `repeated_headline`: the body starts with the headline (bracketed or not).
"""

import re
from collections.abc import Iterable

FAMILIES = ("byline", "wire_footer", "photo_credit", "script", "title_label", "repeated_headline")

_H = r"\u3400-\u4dbf\u4e00-\u9fff"
_S = r"\s?[/／╱|｜]\s?"

_BODY = {
    "byline": re.compile(
        rf"(?:記者|记者|特派員|特派员|特約|特约)\s?[{_H}·]{{2,5}}(?:、[{_H}]{{2,4}})*\s?[/／╱\s]\s?[{_H}\s]{{0,12}}(?:報導|报导|報道|报道)"
        rf"|[{_H}]{{2,8}}{_S}[{_H}]{{0,6}}(?:綜合|综合|採訪|采访|外電|外电)?(?:報導|报导|報道|报道)"
        rf"|中央社(?:記者|记者)[{_H}、]{{2,12}}\d{{1,2}}日"
        rf"|^\s*(?:編譯|编译|撰文|文|記者|记者){_S}[{_H}]{{2,4}}(?:\s|$)"
    ),
    "wire_footer": re.compile(
        r"[（(]\s?(?:中央社|中時新聞網|中时新闻网|聯合報|联合报|自由時報|三立新聞|TVBS|NOWnews|ETtoday)[^）)\n]{0,8}[）)]\s*$"
        r"|(?:延伸|推薦|推荐)(?:閱讀|阅读)(?=[：:】》\s]|$)|[【《](?:延伸|推薦|推荐)(?:閱讀|阅读)|相關新聞[:：]|相关新闻[:：]|看更多|更多[^\s。，]{1,12}(?:報導|报导|新聞|新闻)[:：]?\s*$"
        r"|詳細新聞內容|详细新闻内容|直播請點|直播请点|點我看|点我看|點此看|点此看|請點此|请点此"
        r"|(?:實習|实习|責任|责任)編輯|编辑\s?[/／：:]|(?:^|\s|。)圖文\s?[/／]|(?:^|\s|。)图文\s?[/／]"
        r"|[（(]\s?(?:編輯|编辑|譯者|译者|核稿)[:：]"
        r"|本文(?:經|经)?(?:授權|授权)|原文(?:標題|标题|連結|链接)|下載APP|下载APP|加入(?:粉絲團|粉丝团|LINE)"
        r"|(?:^|[。\s])(?:圖|图)\s?[/／]\s*$"
    ),
    "photo_credit": re.compile(
        r"(?:圖|图|照片|相片|影片|視頻|视频|畫面|画面)(?:片)?\s?(?:/|／|、)?\s?(?:影片|视频)?\s?(?:來源|来源|提供|翻攝|翻摄)"
        r"|翻攝|翻摄"
        r"|(?:攝影|摄影)\s?[/／:：]|[/／]\s?(?:攝影|摄影)"
        rf"|(?:圖|图)\s?[/／]\s?[{_H}A-Za-z]"
        rf"|(?:^|[。\s])[{_H}]{{2,4}}(?:攝|摄)(?:\s|$)"
        r"|資料照|资料照|示意圖|示意图|截圖自|截图自|擷取自|撷取自|取自(?:臉書|脸书|網路|网络|YouTube|IG)"
        r"|[▲▼►]"
    ),
    "script": re.compile(
        r"\bvar\s+\w+\s*=|\b(?:let|const)\s+\w+\s*=\s*[\w\[{(\"']|document\.\w+|window\.\w+|getElementById|function\s*\w*\s*\("
        r"|\w+\.push\(|googletag|\}\s*\)\s*;|\$\(\s*['\"]|</?script|\{\s*[\w-]+\s*:\s*[^{}]{1,40};\s*\}"
    ),
}
_TITLE_LABEL = re.compile(
    r"^\s*(?:[【〔\[][^】〕\]]{1,12}[】〕\]]"
    r"|(?:快訊|快讯|獨家|独家|影|圖|图|影音|視頻|视频|直播|更新|最新|即時|即时|專訪|专访|懶人包|懒人包|有片|多圖|多图|組圖|组图|圖輯|图辑|影片|突發|突发|爆料|內幕|内幕)\s?[/／|｜:：])"
)
_OPEN = r"【〔\[（(「『《〈"
_CLOSE = r"】〕\]）)」』》〉"


def repeated_headline(title: str, body: str) -> bool:
    """True when the body opens with the title (spacing ignored) followed by a closing bracket or a
    break, not by the rest of a sentence (a title that is the first sentence's subject is prose)."""
    core = re.sub(r"\s", "", _TITLE_LABEL.sub("", title))
    if len(core) < 6:
        return False
    pattern = r"\s*".join(map(re.escape, core))
    label = r"(?:[\u4e00-\u9fff]{1,3}\s?[/／])?"
    return bool(re.match(rf"\s*[{_OPEN}]?\s*{label}{pattern}(?:\s*[{_CLOSE}]|\s|$)", body))


def families_in(title: str, body: str) -> set[str]:
    """The boilerplate families found in one cleaned row."""
    found = {name for name, pattern in _BODY.items() if pattern.search(body)}
    if _TITLE_LABEL.search(title):
        found.add("title_label")
    if repeated_headline(title, body):
        found.add("repeated_headline")
    return found


def carry_rates(rows: Iterable[dict], title_key: str = "target", body_key: str = "input") -> dict:
    """`{"rows", "any", "per_family": {family: share}, "examples": {family: [row ids or index]}}`."""
    per: dict[str, int] = dict.fromkeys(FAMILIES, 0)
    examples: dict[str, list] = {f: [] for f in FAMILIES}
    n = hits = 0
    for index, row in enumerate(rows):
        n += 1
        found = families_in(row[title_key] or "", row[body_key] or "")
        hits += bool(found)
        for family in found:
            per[family] += 1
            if len(examples[family]) < 5:
                examples[family].append(row.get("id", index))
    share = lambda k: round(k / n, 4) if n else 0.0  # noqa: E731
    return {"rows": n, "any": share(hits), "per_family": {f: share(c) for f, c in per.items()}, "examples": examples}
