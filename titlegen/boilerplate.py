"""News boilerplate inside the article: bylines, photo and video credits, and their captions.

Plain functions on text, used by `titlegen.tasks.clean` in its rule order (see its docstring).
The rules are written for families, not for one outlet's strings: a byline is any short
`<name or desk>/<place or kind>報導` at a sentence boundary, a credit any
`(圖|照片|影片…)(來源|提供|翻攝…)…` phrase. Every rule matches on `fold(text)` (simplified
boilerplate characters read as Traditional: 摄影 as 攝影), so they are script-agnostic. Footers
and wire credits live in `titlegen.footers`, title labels in `titlegen.headline`.
"""

import functools
import re

from titlegen.chinese_script import apply_hinted, fold, has, hint, sub_folded

HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
OPEN, CLOSE = r"[（(〔【\[]", r"[）)〕】\]]"
INNER = r"[^（()）〔〕【】\[\]\n]"
SLASH = r"\s?[/／╱]\s?"
# Where boilerplate glued to prose can start: the text or a line start, after a sentence end,
# a space, or a caption marker.
BOUNDARY = r"(?:^|(?<=[\s。！？」』）▲▼►（(【〔]))"
_MARKS = r"[▲▼►]*\s?"
_NAME = rf"[{HAN}·]{{2,4}}"
_NAMES = rf"{_NAME}(?:\s?[、,，]\s?{_NAME}){{0,3}}"

_SLASHES = "/|／|╱"
# (pattern, hint): the pattern runs only on text where the cheap hint is found (speed: most
# articles have no byline, and a pattern that may start at any character is slow to scan).
_BYLINE_RES = [
    (re.compile(rf"{OPEN}{INNER}{{0,40}}?(?:報導|\d{{1,2}}日\S{{0,4}}?電){CLOSE}"), hint("報導|電")),
    (re.compile(rf"{OPEN}\s?更新[:：]{INNER}{{0,30}}{CLOSE}"), hint("更新")),
    # Agency datelines: 中央社記者王小明台北30日電, 中央社台北30日綜合外電.
    (re.compile(rf"{BOUNDARY}{_MARKS}中央社(?:記者|特派員)?[{HAN}、]{{0,16}}?\d{{1,2}}日(?:專|綜合外|外)?電", re.M), hint("中央社")),
    # Unbracketed: 記者王小明/台北報導, 國際中心/綜合報導, 記者李大華/採訪報導, 記者 王小明 / 攝影 李大華 台北報導
    # (not `根據外媒/路透社報導`: a source cited in prose).
    (re.compile(
        rf"{BOUNDARY}{_MARKS}(?:(?:實習|特約|駐\S{{1,4}})?記者|特派員|編譯)?\s?(?!根據|據|依據|引述|援引|外媒){_NAMES}{SLASH}"
        rf"(?:攝影\s?{_NAMES}\s?)?[{HAN}]{{0,6}}?(?<![社媒網])(?:綜合|採訪|編譯|外電)?報導",
        re.M,
    ), hint("報導", _SLASHES)),
    # With 記者 in front it is a byline wherever it stands: 熱銷記者吳佩樺/台北報導藍光…
    (re.compile(rf"(?:實習|特約)?記者{_NAMES}{SLASH}[{HAN}]{{0,6}}?(?:綜合|採訪)?報導"), hint("記者", "報導", _SLASHES)),
    (re.compile(rf"{BOUNDARY}{_MARKS}(?:實習|特約)?記者\s?{_NAMES}\s(?:攝影\s?{_NAMES}\s)?[{HAN}]{{2,6}}報導", re.M),
     hint("記者", "報導")),
    # Credit lines of a feature: 撰文/王小明, 報導╱周淑萍、莊哲偉, 攝影：朱世閎, 文/王小明 (name then a break).
    (re.compile(rf"{BOUNDARY}(?:撰文|文字|報導|採訪|採訪整理|整理|編譯)\s?[/／╱:：]\s?{_NAMES}(?=[\s攝圖]|$)", re.M),
     hint("撰文|文字|報導|採訪|整理|編譯", _SLASHES + "|:|：")),
    (re.compile(rf"{BOUNDARY}文{SLASH}{_NAMES}(?=\s|$)", re.M), hint("文", _SLASHES)),
]

_CREDIT_WORDS = r"翻攝|攝影|資料照片?|示意圖|截圖|擷圖|(?:截|擷|取)自"
_MEDIA = r"(?:圖|照|相|影|視|畫面|圖像)[片像頻訊]?"
# Bracketed credits, one pattern that starts with the bracket (a leading character class lets the
# regex engine skip ahead, four separate patterns would scan the text four times):
# (圖/…), (圖片/影片來源：…), (照片提供：…), (影片翻攝自…), (畫面來源：…), (記者王小明攝), (民眾提供),
# (圖與本文無關); not (提供USB轉接配件): prose in brackets
_BRACKET_CREDIT_RE = re.compile(
    rf"{OPEN}(?:\s?{_MEDIA}(?:\s?[/／、與]\s?{_MEDIA})*\s?(?:來源|提供|出處|翻攝|攝影|取自|擷取自?)?\s?(?:{SLASH}|[:：]){INNER}{{0,60}}?"
    rf"|{INNER}{{0,30}}?(?:{_CREDIT_WORDS}){INNER}{{0,30}}?|{INNER}{{1,20}}?(?:提供|來源)|(?:記者)?[{HAN}]{{2,5}}攝|圖{INNER}{{0,10}}無關){CLOSE}"
)
_CHUNK = r"[^\s。，；\n]"  # a credit's text runs to the next space or sentence break
# Unbracketed credits, each with a cheap hint: the scan uses only the branches whose hint is in
# the text (one alternation of every branch tried at every character is slow). The caption
# right before a credit goes with it (see `strip_photo_credits`).
_CREDIT_BRANCHES = (
    (rf"(?:記者|特派員)?[{HAN}、]{{2,12}}{SLASH}(?:[{HAN}]{{0,4}}攝影|翻攝|攝)", hint("攝", _SLASHES)),
    (rf"(?:圖片?|影片|照片|影音){SLASH}[^。\n]{{0,25}}?(?:提供|資料照片?|翻攝{_CHUNK}{{0,40}}|自攝|攝影?)|(?:圖片?|影片|照片|影音){SLASH}{_CHUNK}{{1,40}}",
     hint("圖|影片|照片|影音", _SLASHES)),
    (rf"{_MEDIA}(?:\s?[/／、]\s?{_MEDIA})*\s?(?:來源|提供|出處)\s?(?:{SLASH}|[:：])\s?{_CHUNK}{{1,40}}", hint("來源|提供|出處")),
    (rf"(?:圖|影片|照片)?(?:擷|截)(?:取|圖)?自\s?{_CHUNK}{{1,30}}", hint("擷|截")),
    (rf"翻攝自?\s?{_CHUNK}{{1,40}}", hint("翻攝")),
    (rf"(?<![{HAN}])攝影\s?(?:{SLASH}|[:：])\s?{_NAMES}", hint("攝影")),
    # 本報系資料照, 中新社資料照片: the agency's name goes with the caption before it.
    (rf"(?:社|報系|報|網|中心|新聞|通訊|路透|美聯|法新|歐新|中新|新華|共同|美聯)資料照片?(?:{SLASH}(?:記者)?[{HAN}]{{2,4}}攝影?)?"
     rf"|(?<=[。\s」])(?:資料照片?|示意圖)(?:{SLASH}{_CHUNK}{{1,40}})?|(?<=[。\s」])翻攝(?=\s|$)", hint("資料照|示意圖|翻攝")),
    (r"(?<=\s)中央社(?=\s|$)", hint("中央社")),
    # 。王小明攝 / 突發中心攝: a name and 攝 ending the sentence (`及攝錄影`, `拍攝電影` are prose).
    # 。游智勝攝布洛登…: a two- or three-character name glued to the next caption (not 。他為拍攝專輯).
    (rf"(?<=[。\s])[{HAN}]{{2,4}}攝(?![{HAN}])|(?<=。)(?![{HAN}]{{0,2}}拍)[{HAN}]{{2,3}}攝(?![影氏錄])", hint("攝")),
)
_BRACKET_HINT = hint("（|(|〔|【|[")


@functools.cache
def _credit_re(branches: tuple[int, ...]) -> re.Pattern:
    return re.compile("|".join(_CREDIT_BRANCHES[i][0] for i in branches), re.M)


_CAPTION_MAX = 80
# A caption glued to the prose before it: the last sentence before the credit, if it is short and
# has no comma (prose sentences have them; captions such as `中國海軍航母遼寧艦。` do not), or
# any short sentence that starts `圖為`.
_CAPTION_SHORT = 16
_COMMA_RE = re.compile(r"[，,、；：「]")
_POSITION_RE = re.compile(r"[（(](?:前排|後排|中|左|右)[一二三四五六七八九\d]?[）)]")
# Caption markers: ▲ starts a caption that runs to the line end (or a sentence end when glued).
_MARKER_RE = re.compile(r"[▲▼►]+")  # not △: a section bullet in official texts


def strip_bylines(text: str) -> str:
    return apply_hinted(_BYLINE_RES, text)


def strip_photo_credits(text: str) -> str:
    folded = fold(text)
    if has(folded, _BRACKET_HINT):
        text = sub_folded(_BRACKET_CREDIT_RE, text)
        folded = fold(text)
    branches = tuple(i for i, (_, gate) in enumerate(_CREDIT_BRANCHES) if has(folded, gate))
    if not branches:
        return strip_caption_markers(text)
    pieces, last = [], 0
    for m in _credit_re(branches).finditer(folded):
        pieces += [text[last : _caption_start(text, last, m.start())], " "]
        last = m.end()
    pieces.append(text[last:])
    return strip_caption_markers("".join(pieces))


def _caption_start(text: str, floor: int, start: int, again: bool = True) -> int:
    """Where the caption before a credit at `start` begins (`start` when there is none).

    The caption is the whitespace-free chunk before the credit (from the last space, newline or
    previous credit: captions are often glued together) when it is at most `_CAPTION_MAX` long;
    else, in text with no spaces, the last sentence when it reads as a caption (see `_is_caption`)."""
    boundary = max(text.rfind(" ", floor, start), text.rfind("\n", floor, start))
    cut = boundary + 1 if boundary >= 0 else floor
    if start - cut <= _CAPTION_MAX:
        return cut
    body = text[floor:start].rstrip("。 ")
    begin = floor + max(body.rfind(c) for c in "。！？\n ") + 1
    sentence = text[begin:start]
    if _is_caption(sentence):
        # `…。中新社資料照`: the agency's name was the sentence; the caption is the one before it.
        return _caption_start(text, floor, begin, False) if again and "。" not in sentence and begin > floor else begin
    return start


def _is_caption(sentence: str) -> bool:
    """A sentence glued to prose reads as a caption when it starts `圖為`, names positions
    (`（左二）`), or is a short comma-free noun phrase (`中國海軍航母遼寧艦。`)."""
    if len(sentence) > _CAPTION_MAX:
        return False
    return sentence.startswith("圖為") or bool(_POSITION_RE.search(sentence)) or (
        len(sentence) <= _CAPTION_SHORT and not _COMMA_RE.search(sentence)
    )


def strip_caption_markers(text: str) -> str:
    """`▲` / `▼` / `►` photo captions: the caption after a marker to the line end when the marker
    starts a line and the line is short; otherwise only the marker goes (what follows it may be prose)."""
    if not _MARKER_RE.search(text):
        return text
    pieces, last = [], 0
    for m in _MARKER_RE.finditer(text):
        end = text.find("\n", m.end())
        end = len(text) if end == -1 else end
        own_line = m.start() == 0 or text[m.start() - 1] == "\n"
        cut = end if own_line and end - m.end() <= _CAPTION_MAX else m.end()
        pieces += [text[last : m.start()], " "]
        last = max(cut, m.end())
    pieces.append(text[last:])
    return "".join(pieces)
