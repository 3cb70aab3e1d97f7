"""Site footers, wire credits and script code left in news articles.

- `strip_tail`: everything from a footer marker on (`延伸閱讀`, `相關新聞：`, `更多○○報導`,
  `詳細新聞內容鎖定…`, `直播請點此`, share and stock-list links, embedded JavaScript).
- `strip_wire`: wire and desk credits wherever they stand: `（中央社）`, `（中時新聞網）`,
  `（編輯：…）1091230`, `（譯者：…）`, `(完)`, `實習編輯／…`, `圖文／…`, a dangling `圖／` at the
  end, publication stamps (`出版：12:33 更新：17:41`), `【小編推薦】`.
- `strip_script`: code left after `<script>` tags were stripped (`var x = document.getElementById(…)`):
  any run of ASCII characters (string literals included) that reads as code.

Matching is on `fold(text)`, so simplified forms (`延伸阅读`, `责任编辑`) are caught too.
"""

import re

from titlegen.boilerplate import BOUNDARY, CLOSE, HAN, OPEN, SLASH
from titlegen.chinese_script import apply_hinted, fold, has, hint, sub_folded

# Footer markers: plain strings (str.find is far faster than one big alternation); `_TAIL_CHECKS`
# narrows the ambiguous ones to their footer use.
_TAIL_MARKERS = (
    "延伸閱讀", "推薦閱讀", "相關新聞", "相關報導：", "相關閱讀：", "你或許也想看", "你可能也想看", "》自營商進出明細",
    "【更多精采內容", "【更多新聞", "新聞送上來！", "APP下載LINE好友", "你對新聞是否有想法不吐不快",
    "出版時間", "更新時間", "(function", "domready(", "想看更多", "更多內容，請上", "詳細新聞內容", "直播請點",
    "點我看", "點此看", "點我下載", "看原文", "原文標題：", "原文連結", "本文章經作者授權", "本文經", "推薦報導：",
    "不用抽 不用搶",
)
_LEAD_INS = "【《[〔►▶★☆※"
_FOOTER_AFTER = re.compile(r"[:：】》\]\s]|$")


def _label(width: int):
    """A footer word only where it stands as a label: after a bracket, a marker or a boundary,
    or followed by a colon, a closing bracket, a space or the end."""
    def check(text: str, i: int) -> bool:
        before = text[i - 1] if i else "\n"
        return before in "【《[〔►▶★☆※●■\n " or bool(_FOOTER_AFTER.match(text, i + width))
    return check


_TAIL_CHECKS = {
    # A footer only as a stand-alone word; inside a sentence (`分享相關新聞，並…`) it is prose.
    "相關新聞": lambda text, i: (i == 0 or text[i - 1] in " \n【《。！？」") and bool(_FOOTER_AFTER.match(text, i + 4)),
    "延伸閱讀": _label(4),
    "本文經": lambda text, i: "授權" in text[i + 3 : i + 30],  # 本文經《某某》授權轉載
    "推薦閱讀": _label(4),
    "出版時間": lambda text, i: bool(re.match(r"[:：]?\s?\d", text[i + 4 : i + 7])),
    "更新時間": lambda text, i: bool(re.match(r"[:：]?\s?\d", text[i + 4 : i + 7])),
}
# `更多○○報導`, `看更多○○新聞`, `更多 中時新聞網 報導：` as a label: at a boundary or after a bracket
# or bullet (checked in `_more_news_start`), and followed by a colon, bracket, space or the end.
# The pattern starts with its literal so the scan is fast.
_MORE_NEWS_RE = re.compile(rf"更多\s?[{HAN}A-Za-z0-9 ]{{0,14}}?(?:報導|新聞|文章|內容|消息|資訊|影音)\s?(?=[:：》】\]\s]|$)")
_MORE_LEAD_INS = "【《►▶★ \n\t。！？」』）▲▼（(〔"
_MORE_RE = re.compile(r"\.\.more")

_WIRES = r"中央社|法新社|路透社?|美聯社|共同社|韓聯社|新華社|中新社|中通社|德新社|安莎社|埃菲社|塔斯社|彭博社?|綜合報導|綜合外電"
_OUTLET = rf"[{HAN}A-Za-z]{{1,10}}(?:新聞網|電子報|新聞台|日報|時報|晚報|週刊|周刊|雜誌|通訊社)"
# (pattern, hint): a pattern runs only on text where its cheap hint is found.
_WIRE_RES = [
    # One pattern led by the bracket (a fast scan): (中央社), (中時新聞網), (編輯：王小明)1091230, (完)
    (re.compile(
        rf"{OPEN}(?:\s?(?:{_WIRES}|{_OUTLET})(?:電|訊)?\s?{CLOSE}"
        rf"|\s?(?:責任)?(?:編輯|譯者|核稿|審校|校對|編譯)[:：][^）)\n]{{0,40}}{CLOSE}\s?\d{{0,8}}|完{CLOSE}\s?\d{{0,8}})"
    ), hint("（|(|〔|【|[")),
    (re.compile(rf"{BOUNDARY}(?:實習|責任|文字|影音|網路|核稿|值班)?編輯\s?(?:{SLASH}|[:：])\s?[{HAN}]{{2,3}}(?:[、,，][{HAN}]{{2,3}})*", re.M),
     hint("編輯")),
    (re.compile(rf"{BOUNDARY}圖文\s?(?:{SLASH}|[:：])\s?[^\s。，\n（）()]{{1,20}}", re.M), hint("圖文")),
    (re.compile(rf"(?:^|(?<=[。！？\s]))圖片?{SLASH}\s*$"), hint("圖", "/|／|╱")),
    (re.compile(r"(?:出版|更新|修改時間|發布時間|發稿時間|最後更新)\s?[:：]\s?\d{1,4}(?:[:：/-]\d{1,2}){0,4}"),
     hint("出版|更新|時間")),
    (re.compile(rf"{OPEN}?小編推薦{CLOSE}?[:：]?"), hint("小編推薦")),
    # Reader notes and promotions on their own line: ★三立新聞網提醒您…, ※本文由…授權
    (re.compile(r"^[★☆※][^\n]{0,120}$", re.M), hint("★|☆|※")),
    (re.compile(r"(?:新聞|消息)來源\s?[:：][^\n。]{1,30}$"), hint("來源")),
]

_CODE_RUN_RE = re.compile(r"(?:[\x20-\x7e\t\n]|\"[^\"\n]{0,200}\"|'[^'\n]{0,200}')+")
_CODE_SIGN_RE = re.compile(
    r"\b(?:var|let|const)\s+[\w$]+\s*=|\bfunction\s*[\w$]*\s*\(|\bdocument\.\w|\bwindow\.\w|getElementById|addEventListener"
    r"|\.push\(|googletag|=>\s*\{|\}\s*\)\s*;|\$\(\s*['\"]|\bif\s*\(.{0,80}\)\s*\{|\{\s*[\w-]+\s*:\s*[^{};]{1,40};\s*\}"
)
_CODE_HINT = hint(";|{|}|document.|window.|=>")


def strip_tail(text: str) -> str:
    text = _MORE_RE.sub(" ", text)
    folded = fold(text)
    cut = len(text)
    for marker in _TAIL_MARKERS:
        i = folded.find(marker, 0, cut)
        check = _TAIL_CHECKS.get(marker)
        while i != -1 and check and not check(folded, i):
            i = folded.find(marker, i + 1, cut)
        if i != -1:
            cut = i
    start = _more_news_start(folded, cut) if "更多" in folded else None
    if start is not None:
        cut = start
    while cut and text[cut - 1] in _LEAD_INS:  # the bracket or bullet that opened the footer
        cut -= 1
    return text[:cut]


def _more_news_start(folded: str, end: int) -> int | None:
    for m in _MORE_NEWS_RE.finditer(folded, 0, end):
        start = m.start()
        for lead in ("點我看", "看"):
            if folded.startswith(lead, start - len(lead)):
                start -= len(lead)
                break
        if start == 0 or folded[start - 1] in _MORE_LEAD_INS:
            return start
    return None


def strip_wire(text: str) -> str:
    return apply_hinted(_WIRE_RES, text)


def strip_script(text: str) -> str:
    """Remove runs of ASCII text that read as JavaScript or CSS (left after tags were stripped)."""
    if not has(text, _CODE_HINT):
        return text
    return _CODE_RUN_RE.sub(lambda m: " " if _CODE_SIGN_RE.search(m.group()) else m.group(), text)
