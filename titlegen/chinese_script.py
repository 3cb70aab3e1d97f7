"""Simplified and Traditional Chinese: detect simplified rows, convert them, and fold for matching.

- `is_simplified(text)`: OpenCC's `s2t` changes at least `SIMPLIFIED_THRESHOLD` of the Han
  characters and more of them than `t2s` does. Traditional news text: `s2t` changes under 5 %
  (台, 里, 周 ... are valid in both scripts; 99th percentile 4.8 % on zh-tw-news-2017) while `t2s`
  changes a quarter; simplified text the other way round.
- `to_traditional(text)`: OpenCC `s2twp` (Simplified to Taiwan standard, with Taiwanese
  phrasing: 软件 -> 軟體), used by `clean` only on rows detected as simplified, so Traditional rows
  are never touched (OpenCC would also turn 台 into 臺 in them).
- `fold(text)`: a one-to-one character map from the simplified to the Traditional form of the
  characters that boilerplate is written with (摄 -> 攝, 图 -> 圖, 报导 -> 報導 ...). It keeps
  every index, so the boilerplate rules match on `fold(text)` and cut the same spans out of the
  original: the rules are script-agnostic without converting anything (`sub_folded`).
"""

import functools
import re
from collections.abc import Callable

SIMPLIFIED_THRESHOLD = 0.05
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# Frequent characters that exist only in simplified script: a text without any is Traditional,
# and OpenCC is not asked (it is the slow part).
_SIMPLIFIED_ONLY_RE = re.compile("[们这说时国为会对发经过还个来记报导图摄电与东车长门问间见让认语读谁请选边进远连钱铁银错闻页题风飞马鱼鸟]")

# simplified -> traditional, one character each; only characters of boilerplate vocabulary.
_PAIRS = (
    "摄攝 图圖 报報 导導 记記 来來 资資 讯訊 独獨 编編 辑輯 实實 责責 详詳 细細 锁鎖 点點 请請 阅閱 读讀 关關 闻聞 "
    "撷擷 视視 频頻 脸臉 书書 转轉 载載 权權 标標 题題 连連 结結 综綜 访訪 译譯 电電 专專 处處 时時 网網 联聯 页頁 "
    "广廣 乐樂 传傳 达達 发發 岁歲 这這 们們 为為 与與 张張 刘劉 陈陳 杨楊 黄黃 赵趙 吴吳 郑鄭 谢謝 罗羅 韩韓 冯馮 邓鄧 "
    "许許 苏蘇 蒋蔣 叶葉 钟鍾 卢盧 汤湯 夺奪 门門 间間 际際 国國 华華 湾灣 东東 预預 览覽 热熱 启啟 戏戲 压壓 "
    "剧劇 节節 众眾 观觀 现現 场場 战戰 团團 历歷 亚亞 欧歐 业業 财財 经經 体體 娱娛 会會 议議 "
    "质質 说說 话話 让讓 还還 动動 态態 审審 挂掛 赞讚 订訂 购購 员員 务務 备備 荐薦 条條 则則 钮鈕 "
    "纸紙 厅廳 帧幀 画畫 辐輻 龙龍 凤鳳 鸟鳥 马馬 齐齊"
)
_FOLD = str.maketrans({pair[0]: pair[1] for pair in _PAIRS.split()})
# str.translate with a dict is slow on long text; a character-class search is not.
_FOLDABLE_RE = re.compile("[" + "".join(pair[0] for pair in _PAIRS.split()) + "]")


@functools.lru_cache(maxsize=16)  # the rules fold the same text several times in a row
def fold(text: str) -> str:
    """`text` with boilerplate characters in their Traditional form; same length, same indices."""
    return text.translate(_FOLD) if _FOLDABLE_RE.search(text) else text


def sub_folded(pattern: re.Pattern, text: str, repl: str | Callable[[re.Match], str] = " ") -> str:
    """`pattern.sub(repl, text)`, matched on `fold(text)`: spans found in the folded text are
    replaced in the original (a callable `repl` gets the match on the folded text)."""
    folded = fold(text)
    if folded == text:
        return pattern.sub(repl, text)
    pieces, last = [], 0
    for m in pattern.finditer(folded):
        pieces += [text[last : m.start()], repl(m) if callable(repl) else repl]
        last = m.end()
    pieces.append(text[last:])
    return "".join(pieces)


Hint = tuple[tuple[str, ...], ...]


def hint(*groups: str) -> Hint:
    """A cheap gate for a pattern: `hint("報導|電", "/|／")` holds for text containing 報導 or 電,
    and / or ／ (substring tests are far faster than a regex scan; a gate may let through text the
    pattern then does not match, never the other way round)."""
    return tuple(tuple(group.split("|")) for group in groups)


def has(text: str, gate: Hint) -> bool:
    return all(any(word in text for word in group) for group in gate)


def apply_hinted(rules: list[tuple[re.Pattern, Hint]], text: str) -> str:
    """Remove every match of each `(pattern, hint)` rule whose cheap `hint` holds (on the folded text)."""
    folded = fold(text)
    for pattern, gate in rules:
        if has(folded, gate):
            new = sub_folded(pattern, text)
            if new != text:
                text, folded = new, fold(new)
    return text


@functools.cache
def _converter(config: str):
    try:
        import opencc
    except ImportError as exc:  # a declared dependency; only a broken install gets here
        raise RuntimeError(
            "Converting simplified Chinese needs the `opencc` package (a titlegen dependency): "
            "reinstall titlegen, or set clean.simplified='keep'."
        ) from exc
    return opencc.OpenCC(config)


def _changed_share(sample: str, config: str) -> float:
    converted = _converter(config).convert(sample)
    return sum(a != b for a, b in zip(sample, converted)) / len(sample)


def simplified_share(text: str) -> float:
    """Share of the (first 400) Han characters that Simplified-to-Traditional conversion changes."""
    han = "".join(_HAN_RE.findall(text)[:400])
    return _changed_share(han, "s2t") if han else 0.0


def is_simplified(text: str) -> bool:
    """True when `text` is mostly simplified: conversion to Traditional changes at least
    `SIMPLIFIED_THRESHOLD` of its Han characters and more of them than conversion to Simplified
    would (characters such as 台, 里, 周 are valid in both and change either way)."""
    if not _SIMPLIFIED_ONLY_RE.search(text):
        return False
    han = "".join(_HAN_RE.findall(text)[:400])
    to_t = _changed_share(han, "s2t")
    return to_t >= SIMPLIFIED_THRESHOLD and to_t > _changed_share(han, "t2s")


def to_traditional(text: str) -> str:
    """Simplified Chinese to Taiwan-standard Traditional with Taiwanese phrasing (OpenCC `s2twp`)."""
    return _converter("s2twp").convert(text)
