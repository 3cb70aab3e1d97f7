"""News boilerplate rules: bylines, photo credits, site footers and title labels.

Plain functions on text, used by `titlegen.tasks.clean` in its rule order (see its docstring);
each returns the text with the boilerplate removed and never touches anything else.
"""

import re

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_OPEN, _CLOSE = r"[（(〔【\[]", r"[）)〕】\]]"
_INNER = r"[^（()）〔〕【】\[\]\n]"
_SLASH = r"\s?[/／╱]\s?"

_BYLINE_RES = [
    re.compile(rf"{_OPEN}{_INNER}{{0,40}}?(?:報導|\d{{1,2}}日\S{{0,4}}?電){_CLOSE}"),
    re.compile(rf"^\s*中央社記者{_INNER}{{1,20}}?\d{{1,2}}日(?:專|綜合外|外)?電"),
    re.compile(rf"{_OPEN}\s?更新[:：]{_INNER}{{0,30}}{_CLOSE}"),
]
_CREDIT_WORDS = r"翻攝|攝影|資料照片?|示意圖|截圖|擷圖|(?:截|擷|取)自"
_BRACKET_CREDIT_RES = [
    re.compile(rf"{_OPEN}\s?(?:圖|照片?|相片|影片){_SLASH}{_INNER}{{0,40}}?{_CLOSE}"),
    re.compile(rf"{_OPEN}{_INNER}{{0,30}}?(?:{_CREDIT_WORDS}){_INNER}{{0,30}}?{_CLOSE}"),
    re.compile(rf"{_OPEN}(?:記者)?[{_HAN}]{{2,4}}攝{_CLOSE}"),
]
# Unbracketed credits; a caption (one whitespace-free chunk of at most 80 characters right
# before the credit) goes with them, since captions describe a photo that is not there.
_CREDIT = (
    rf"(?:記者|特派員)?[{_HAN}、]{{2,12}}{_SLASH}(?:[{_HAN}]{{0,4}}攝影|翻攝|攝)"
    rf"|圖{_SLASH}[^。\n]{{0,25}}?(?:提供|資料照片?|翻攝\S{{0,10}}|自攝|攝影?)"
    rf"|圖{_SLASH}[^\s。，]{{1,20}}"
    rf"|圖擷自\s?[^\s。，]{{1,20}}"
    rf"|翻攝自?[^\s。，]{{1,15}}"
    rf"|(?:聯合報系|本報)資料照片?|(?<=[。\s])資料照片?|(?<=\s)中央社(?=\s|$)"
    rf"|(?<=。)[{_HAN}]{{2,3}}攝(?![影氏])"
)
_CREDIT_RE = re.compile(_CREDIT, re.M)
# Cheap test first: most articles have no credit, and the full pattern is slow to scan.
_CREDIT_HINT_RE = re.compile(r"攝|圖\s?[/／╱]|圖擷自|資料照|中央社|示意圖|截圖|擷圖|取自")
_CAPTION_MAX = 80
# Site footers: everything from the first of these on is dropped. Plain strings (str.find is far
# faster than one big alternation); `_TAIL_CHECKS` narrows the ambiguous ones.
_TAIL_MARKERS = (
    "【延伸閱讀】", "延伸閱讀：", "延伸閱讀:", "推薦閱讀：", "推薦閱讀:", "相關新聞", "你或許也想看", "》自營商進出明細",
    "【更多精采內容", "【更多新聞", "新聞送上來！", "APP下載LINE好友", "你對新聞是否有想法不吐不快",
    "出版時間", "更新時間", "(function", "domready(",
)
_TAIL_CHECKS = {
    # A footer only as a stand-alone word; inside a sentence it is prose.
    "相關新聞": lambda text, i: (i == 0 or text[i - 1].isspace()) and (i + 4 == len(text) or text[i + 4].isspace()),
    "出版時間": lambda text, i: bool(re.match(r"[:：]?\s?\d", text[i + 4 : i + 7])),
    "更新時間": lambda text, i: bool(re.match(r"[:：]?\s?\d", text[i + 4 : i + 7])),
}
_MORE_RE = re.compile(r"\.\.more")
_TITLE_LABEL_RE = re.compile(r"^\s*[【〔\[][^】〕\]]{1,10}[】〕\]]\s*")


def strip_bylines(text: str) -> str:
    for pattern in _BYLINE_RES:
        text = pattern.sub(" ", text)
    return text


def strip_photo_credits(text: str) -> str:
    if not _CREDIT_HINT_RE.search(text):
        return text
    for pattern in _BRACKET_CREDIT_RES:
        text = pattern.sub(" ", text)
    pieces, last = [], 0
    for m in _CREDIT_RE.finditer(text):
        # The caption: the whitespace-free chunk before the credit, from the last space, newline
        # or previous credit (captions are often glued together), if short enough to be one.
        boundary = max(text.rfind(" ", last, m.start()), text.rfind("\n", last, m.start()))
        cut = boundary + 1 if boundary >= 0 else last
        if m.start() - cut > _CAPTION_MAX:
            cut = m.start()
        pieces += [text[last:cut], " "]
        last = m.end()
    pieces.append(text[last:])
    return "".join(pieces)


def strip_tail(text: str) -> str:
    text = _MORE_RE.sub(" ", text)
    cut = len(text)
    for marker in _TAIL_MARKERS:
        i = text.find(marker, 0, cut)
        check = _TAIL_CHECKS.get(marker)
        while i != -1 and check and not check(text, i):
            i = text.find(marker, i + 1, cut)
        if i != -1:
            cut = i
    return text[:cut]


def strip_title_label(title: str) -> str:
    return _TITLE_LABEL_RE.sub("", title)
