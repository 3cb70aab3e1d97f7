"""Headline boilerplate: labels at the start or end of a title, and the headline repeated at the
start of the article.

- `strip_title_label`: leading labels, repeatedly: `【即時短評】`, `〔快訊〕`, and `<label>/` where the
  label is one or two Chinese characters (`影/`, `圖/`, `快訊/`, `獨家/`, `有片/`) or a known longer
  one (`懶人包/`, `整理包/`); three characters and more are usually a speaker (`柯文哲/…`) and
  stay. Trailing `（影）`/`(圖)`-style tags and ` | 某某新聞網` site names go too.
- `strip_repeated_headline`: the body opening with the headline, bracketed (`【標題】`, `「標題」`)
  or followed by a line break or space, loses that copy. A headline that is the subject of the
  first sentence (`總統府今天舉行…典禮，…`) is prose and stays.
"""

import re

from titlegen.boilerplate import HAN
from titlegen.chinese_script import fold

_LONG_LABELS = rf"懶人包|整理包|新聞眼|一分鐘|看影片|短影音|圖輯|即時短評|[{HAN}]{{0,2}}(?:快訊|獨家|直擊|影音|專訪|現場|直播|影片)"
_LEADING_RE = re.compile(
    rf"\s*(?:[【〔\[][^】〕\]]{{1,10}}[】〕\]]|(?:[{HAN}]{{1,2}}|{_LONG_LABELS})\s?[/／╱|｜]|(?:快訊|獨家|即時|最新|突發)\s?[:：])\s*"
)
_TRAILING_RE = re.compile(
    r"\s?(?:[（(](?:影|圖|多圖|影音|有片|組圖|圖輯|影片|更新|快訊|獨家|直播|動畫|懶人包|視頻|附影片|內有影片)[）)]"
    rf"|(?:\s?[|｜]\s?|\s[-－–—]\s)[{HAN}A-Za-z0-9 ]{{1,14}}(?:新聞網|新聞雲|電子報|新聞台|新聞|日報|時報|晚報|週刊|周刊|雜誌|TV|News|網))\s*$"
)
_OPENERS = "【〔[（(「『《〈"
_CLOSERS = "】〕]）)」』》〉"


def strip_title_label(title: str) -> str:
    for _ in range(3):  # 獨家/影/…: labels come stacked
        folded = fold(title)
        m = _LEADING_RE.match(folded)
        if not m or m.end() >= len(title):
            break
        title = title[m.end() :]
    for _ in range(2):
        m = _TRAILING_RE.search(fold(title))
        if not m or m.start() == 0:
            break
        title = title[: m.start()]
    return title


def strip_repeated_headline(title: str, body: str) -> str:
    """`body` without a copy of `title` at its start (spacing ignored); unchanged otherwise."""
    core = "".join(title.split())
    if len(core) < 6:
        return body
    i = 0
    while i < len(body) and (body[i].isspace() or body[i] in _OPENERS):
        i += 1
    opened = any(c in _OPENERS for c in body[:i])
    label = _LEADING_RE.match(fold(body), i)  # 【快訊/標題】: the label was stripped from the title only
    if label and not fold(body[i:]).startswith(fold(core)):
        i = label.end()
    matched = 0
    while i < len(body) and matched < len(core):
        if body[i].isspace():
            i += 1
        elif body[i] == core[matched]:
            i, matched = i + 1, matched + 1
        else:
            return body
    if matched < len(core):
        return body
    rest = body[i:]
    if rest[:1] and rest[0] in _CLOSERS:
        return rest[1:].lstrip()
    if not opened and (not rest or rest[0].isspace()):
        return rest.lstrip()
    return body
