"""clean: turn raw news rows into `{input, target}` pairs fit to train on.

`content` (the article) becomes `input` and `title` becomes `target`, through these rules in
order, each counted by the number of rows it changed (the boilerplate rules live in
`titlegen.boilerplate`, `titlegen.footers` and `titlegen.headline`, written for families of
boilerplate rather than one outlet's strings, and match simplified forms too):

0. `simplified`: a row detected as simplified Chinese (`titlegen.chinese_script.is_simplified`) is
   converted to Taiwan-standard Traditional with OpenCC (`clean.simplified="convert"`, default) or
   kept (`"keep"`); either way the report counts such rows under `script`.
1. `html`: HTML entities decoded (`&nbsp` too), tags, `<script>`/`<style>` blocks and inline
   redirects (`window.location...`) removed.
2. `unicode`: NFKC on everything except Chinese full-width punctuation (NFKC would turn `，` into
   `,`): full-width letters and digits become ASCII, the ideographic space a space; zero-width and
   control characters are removed.
3. `url`: web addresses removed (and brackets they leave empty).
4. `script`: code left after the tags went (`var x = document.getElementById(…);`).
5. `byline`: bracketed (`（記者王小明／台北報導）`, `【中央社／花蓮30日電】`) and unbracketed bylines
   glued to the text (`記者王小明/台北報導受到…`, `國際中心/綜合報導`, after `▲▼` too), `（更新：…）`.
6. `photo_credit`: photo and video credits of any length and the caption before them
   (`圖／翻攝自…微博`, `（圖片/影片來源：…）`, `攝影：…`, `本報系資料照`, `。王小明攝`), and `▲` captions.
7. `tail`: everything from a site footer on (`相關新聞：`, `延伸閱讀`, `更多○○報導`, `詳細新聞內容鎖定…`,
   `直播請點此`, share and stock-list links, embedded JavaScript).
8. `wire_credit`: `（中央社）`, `（編輯：…）`, `實習編輯／…`, `圖文／…`, a dangling `圖／`, time stamps.
9. `title_label`: labels at the start of the title (`【即時短評】`, `快訊/`, `獨家/`, `影/`) and
   trailing tags (`（影）`, `｜某某新聞網`).
10. `punctuation`: half-width `, ! ? ; : ( )` inside Chinese text become full-width, so one
   article never mixes both forms.
11. `whitespace`: runs of spaces collapsed; spaces between two Chinese characters or next to
   Chinese punctuation removed from the article (they are hyperlink residue there); paragraphs kept
   as single newlines; titles kept on one line (a space inside a headline is a separator).
12. `repeated_headline`: a copy of the headline opening the article (`【標題】…`) is removed.

Then rows are dropped, each under the first reason that applies: `not_a_string` (null or
non-string title or content), `empty`, `title_too_short`, `title_too_long` (titles are never cut:
a cut headline is a bad target), `content_too_short`, `content_too_long` (only with
`overlong_content="drop"`; with `"truncate"` the article is cut after the last sentence end
within `max_content_chars`, or hard at the limit when that would keep less than half, and counted
as `truncated`), `exact_duplicate` (same cleaned article as an earlier row) and `near_duplicate`
(character 5-gram Jaccard >= `near_duplicate_threshold` with an earlier kept row).
"""

import functools
import html
import logging
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import task

from titlegen.boilerplate import strip_bylines, strip_photo_credits
from titlegen.footers import strip_script, strip_tail, strip_wire
from titlegen.headline import strip_repeated_headline, strip_title_label
from titlegen.params import CleanParams, ColumnMap
from titlegen.chinese_script import is_simplified, to_traditional
from titlegen.caching import STAMP_SUFFIX, StageCache, file_input_sha256, stamped
from titlegen.runs import atomic_write_json, fingerprint, write_jsonl

_log = logging.getLogger(__name__)
CLEAN_FILE = "clean.jsonl"
REPORT_FILE = "clean_report.json"
PASSTHROUGH = ("category", "link", "timestamp", "publisher_split")  # the last: see tasks/ingest.py
CHANGE_REASONS = (
    "simplified", "html", "unicode", "url", "script", "byline", "photo_credit", "tail", "wire_credit", "title_label",
    "punctuation", "whitespace", "repeated_headline", "truncated",
)
DROP_REASONS = (
    "not_a_string", "empty", "title_too_short", "title_too_long", "content_too_short",
    "content_too_long", "exact_duplicate", "near_duplicate",
)

# Characters whose full-width form is the correct one in Chinese text; NFKC would narrow them.
_KEEP_WIDE = "，！？；：（）～…"
# Outside the BMP only these blocks change under NFKC in news text (math letters, enclosed
# alphanumerics, CJK compatibility ideographs); a BMP-only class keeps the regex fast (bitmap).
_NFKC_ASTRAL_RE = re.compile("[\U0001D400-\U0001D7FF\U0001F100-\U0001F1FF\U0002F800-\U0002FA1F]+")
_INVISIBLE_RE = re.compile(r"[\u200b-\u200f\u2028\u2029\u2060-\u2064\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = _HAN + r"\u3000-\u303f\uff01-\uff60\u2026\u2014"  # ideographs + CJK and full-width punctuation

_TAG_RE = re.compile(r"</?[A-Za-z][^<>\n]{0,200}>")
_SCRIPT_RE = re.compile(r"window\.location\.href\s*=\s*\"[^\"]*\";?")
_CODE_BLOCK_RE = re.compile(r"<(script|style|noscript)\b[^>]*>.*?(?:</\1\s*>|$)", re.S | re.I)
_URL_RE = re.compile(r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]*")
_EMPTY_BRACKETS_RE = re.compile(r"[（(〔【\[]\s*[）)〕】\]]")

_NARROW_TO_WIDE = str.maketrans({",": "，", "!": "！", "?": "？", ";": "；", ":": "："})
_NARROW_PUNCT_RE = re.compile(r"[,!?;:]")
_PAREN_RE = re.compile(r"\(([^()\n]{0,80})\)")
_CJK_CHAR_RE = re.compile(f"[{_CJK}]")

_SPACES_RE = re.compile(r"[^\S\n]+")
_SPACE_RE = re.compile(r"(?<=\S) (?=\S)")
_WIDE_PUNCT = set("，。！？；：、「」『』（）《》〈〉【】〔〕…")
_REPEATED_PUNCT_RE = re.compile(r"([。，、；：！？])[。，、；：]+")
_SENTENCE_END_RE = re.compile(r"[。！？!?][」』）]?")


def strip_html(text: str) -> str:
    if "<" in text:
        text = _CODE_BLOCK_RE.sub(" ", text)
    text = html.unescape(text)
    text = _SCRIPT_RE.sub(" ", text)
    return _TAG_RE.sub(" ", text)


def normalize_unicode(text: str) -> str:
    """NFKC everywhere except on the full-width punctuation Chinese text should keep."""
    # Character by character (only runs of characters NFKC changes are touched, which is fast);
    # whole-string NFKC would also compose combining sequences, which zh-TW news does not use.
    nfkc = lambda m: unicodedata.normalize("NFKC", m.group())  # noqa: E731
    text = _NFKC_ASTRAL_RE.sub(nfkc, _nfkc_changing_re().sub(nfkc, text))
    return _INVISIBLE_RE.sub("", text)


@functools.cache
def _nfkc_changing_re() -> re.Pattern:
    """A character class of every BMP character NFKC rewrites, except those in `_KEEP_WIDE`."""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        ch = chr(code)
        if 0xD800 <= code < 0xE000 or ch in _KEEP_WIDE or unicodedata.normalize("NFKC", ch) == ch:
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{body}]+")


def strip_urls(text: str) -> str:
    return _EMPTY_BRACKETS_RE.sub("", _URL_RE.sub(" ", text))


def unify_punctuation(text: str) -> str:
    """Half-width punctuation next to Chinese text becomes full-width (times like 10:41 stay)."""
    def narrow_mark(m: re.Match) -> str:
        before = text[m.start() - 1] if m.start() else ""
        after = text[m.end()] if m.end() < len(text) else ""
        if _CJK_CHAR_RE.match(before) or (_CJK_CHAR_RE.match(after) and not before.isascii() or before.isspace()) and _CJK_CHAR_RE.match(after):
            return m.group().translate(_NARROW_TO_WIDE)
        return m.group()

    def paren(m: re.Match) -> str:
        before = text[m.start() - 1] if m.start() else ""
        if _CJK_CHAR_RE.search(m.group(1)) or _CJK_CHAR_RE.match(before):
            return f"（{m.group(1)}）"
        return m.group()

    text = _NARROW_PUNCT_RE.sub(narrow_mark, text)
    return _PAREN_RE.sub(paren, text) if "(" in text else text


def normalize_whitespace(text: str, *, title: bool) -> str:
    if title:
        return _SPACES_RE.sub(" ", text.replace("\n", " ")).strip()
    lines = (" ".join(line.split()) for line in text.split("\n"))
    text = "\n".join(line for line in lines if line)
    if " " in text:

        def space(m: re.Match) -> str:
            before, after = text[m.start() - 1], text[m.end()]
            if before in _WIDE_PUNCT or after in _WIDE_PUNCT or (_CJK_CHAR_RE.match(before) and _CJK_CHAR_RE.match(after)):
                return ""
            return " "

        text = _SPACE_RE.sub(space, text)
    # Removed credits and links leave `。。` or `！。` behind.
    text = _REPEATED_PUNCT_RE.sub(r"\1", text)
    return text.lstrip("，。、；：！？ \n").strip()


def truncate_at_sentence(text: str, limit: int) -> str:
    """The longest prefix within `limit` ending at a sentence end; a hard cut when that keeps less than half."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in _SENTENCE_END_RE.finditer(head)]
    if ends and ends[-1] >= limit // 2:
        return head[: ends[-1]]
    return head


_CONTENT_STEPS = (
    ("html", strip_html), ("unicode", normalize_unicode), ("url", strip_urls), ("script", strip_script),
    ("byline", strip_bylines), ("photo_credit", strip_photo_credits), ("tail", strip_tail), ("wire_credit", strip_wire),
    ("punctuation", unify_punctuation),
    ("whitespace", lambda t: normalize_whitespace(t, title=False)),
)
_TITLE_STEPS = (
    ("html", strip_html), ("unicode", normalize_unicode), ("url", strip_urls), ("title_label", strip_title_label),
    ("punctuation", unify_punctuation), ("whitespace", lambda t: normalize_whitespace(t, title=True)),
)


def clean_text(text: str, steps, changed: set[str]) -> str:
    """Apply `steps` in order, adding the name of each step that changed the text to `changed`."""
    for name, step in steps:
        new = step(text)
        if new != text:
            changed.add(name)
        text = new
    return text


def clean_row(title: Any, content: Any, params: CleanParams) -> tuple[str | None, str | None, set[str], str | None]:
    """`(target, input, changes, drop_reason)` for one raw row; `drop_reason` None keeps it."""
    changed: set[str] = set()
    if not isinstance(title, str) or not isinstance(content, str):
        return None, None, changed, "not_a_string"
    if is_simplified(title + content):
        changed.add("simplified_rows")
        if params.simplified == "convert":
            title, content = to_traditional(title), to_traditional(content)
            changed.add("simplified")
    target = clean_text(title, _TITLE_STEPS, changed)
    body = clean_text(content, _CONTENT_STEPS, changed)
    unrepeated = strip_repeated_headline(target, body)
    if unrepeated != body:
        changed.add("repeated_headline")
        body = normalize_whitespace(unrepeated, title=False)
    if not target or not body:
        return target, body, changed, "empty"
    if len(target) < params.min_title_chars:
        return target, body, changed, "title_too_short"
    if len(target) > params.max_title_chars:
        return target, body, changed, "title_too_long"
    if len(body) < params.min_content_chars:
        return target, body, changed, "content_too_short"
    if len(body) > params.max_content_chars:
        if params.overlong_content == "drop":
            return target, body, changed, "content_too_long"
        body = truncate_at_sentence(body, params.max_content_chars)
        changed.add("truncated")
    return target, body, changed, None


def _read_raw(raw_path: str | Path, columns: ColumnMap) -> list[dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(raw_path)
    missing = [c for c in (columns.input, columns.target) if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{raw_path} has no column {missing}; columns found: {table.column_names}. "
            "Set the flow parameter `columns` (e.g. {\"input\": \"body\", \"target\": \"headline\"})."
        )
    keep = [c for c in (columns.input, columns.target, *PASSTHROUGH) if c in table.column_names]
    return table.select(keep).to_pylist()


def _drop_duplicates(rows: list[dict], threshold: float, counts: Counter) -> list[dict]:
    from titlegen.neardup import near_duplicate_pairs

    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["input"] in seen:
            counts["exact_duplicate"] += 1
            continue
        seen.add(row["input"])
        unique.append(row)
    pairs = near_duplicate_pairs([r["input"] for r in unique], threshold)
    earlier: dict[int, list[int]] = {}
    for i, j, _ in pairs:
        earlier.setdefault(j, []).append(i)
    dropped: set[int] = set()
    for j in sorted(earlier):
        if any(i not in dropped for i in earlier[j]):
            dropped.add(j)
    counts["near_duplicate"] += len(dropped)
    return [r for k, r in enumerate(unique) if k not in dropped]


def clean(raw_path: str | Path, columns: ColumnMap, clean_params: CleanParams, out_dir: str | Path) -> dict:
    """Clean the raw rows into `<out_dir>/clean.jsonl` and `clean_report.json`.

    Returns `path` (the JSONL: `id`, `input`, `target`, and `category`/`link`/`timestamp` when
    present), `rows`, `counts` (rows changed and dropped, by reason), `script` (simplified-Chinese
    rows found and what was done with them) and `report_path`.
    Raises ValueError when no row survives.
    """
    rows = _read_raw(raw_path, columns)
    counts: Counter = Counter({r: 0 for r in (*CHANGE_REASONS, *DROP_REASONS)})
    kept: list[dict] = []
    for index, raw in enumerate(rows):
        target, body, changed, reason = clean_row(raw[columns.target], raw[columns.input], clean_params)
        counts.update(changed)
        if reason:
            counts[reason] += 1
            continue
        row = {"id": fingerprint([target, body], 16), "input": body, "target": target, "source_row": index}
        row.update({k: raw[k] for k in PASSTHROUGH if k in raw and raw[k] is not None})
        kept.append(row)
    simplified = counts.pop("simplified_rows", 0)
    script = {"simplified_rows": simplified, "simplified_share": round(simplified / max(1, len(rows)), 4),
              "action": clean_params.simplified if simplified else None}
    if simplified:
        _log.warning(
            "%d of %d rows (%.1f%%) of %s are simplified Chinese; %s (clean.simplified=%r).", simplified, len(rows),
            100 * script["simplified_share"], raw_path,
            "converted to Traditional with OpenCC" if clean_params.simplified == "convert" else "kept as they are",
            clean_params.simplified,
        )
    before_dedup = len(kept)
    kept = _drop_duplicates(kept, clean_params.near_duplicate_threshold, counts)
    if not kept:
        raise ValueError(_emptied_message(raw_path, len(rows), counts))
    if len(kept) == 1 and before_dedup > 1:
        raise ValueError(
            f"{raw_path} holds only duplicates: {before_dedup} usable rows are copies or near copies "
            f"(Jaccard >= clean.near_duplicate_threshold={clean_params.near_duplicate_threshold}) of one article; "
            "point `dataset` at a dataset with distinct articles."
        )
    out = Path(out_dir)
    path = write_jsonl(out / CLEAN_FILE, kept)
    report = {"rows_in": len(rows), "rows_out": len(kept), "counts": dict(counts), "script": script,
              "params": clean_params.model_dump()}
    report_path = atomic_write_json(out / REPORT_FILE, report)
    return {"path": str(path), "rows": len(kept), "counts": dict(counts), "script": script, "report_path": str(report_path)}


def _emptied_message(raw_path: str | Path, rows_in: int, counts: Counter) -> str:
    drops = ", ".join(f"{r}={counts[r]}" for r in DROP_REASONS if counts[r]) or "no rows at all"
    return (
        f"Cleaning left no rows of {rows_in} in {raw_path} (dropped: {drops}); check `columns` and the "
        "length limits in `clean` (min_title_chars, max_title_chars, min_content_chars, overlong_content)."
    )


def counts_table(counts: dict[str, int], rows_in: int, rows_out: int) -> list[dict]:
    """Rows of the Prefect table artifact: one per reason, changed ones first."""
    table = [{"reason": r, "kind": "changed", "rows": counts.get(r, 0)} for r in CHANGE_REASONS]
    table += [{"reason": r, "kind": "dropped", "rows": counts.get(r, 0)} for r in DROP_REASONS]
    table += [{"reason": "rows in", "kind": "total", "rows": rows_in}, {"reason": "rows out", "kind": "total", "rows": rows_out}]
    return table


def _stamp(inputs: dict) -> Path:
    return Path(inputs["out_dir"]) / f".clean{STAMP_SUFFIX}"


def _rules_source_hash() -> str:
    """The boilerplate rules live in their own module: editing one must re-run cleaning too."""
    import inspect

    from titlegen import boilerplate, chinese_script, footers, headline

    return fingerprint([inspect.getsource(m) for m in (boilerplate, chinese_script, footers, headline)], 16)


@task(
    name="clean",
    cache_policy=StageCache(
        code_of=__name__,
        fingerprint=lambda inputs: (file_input_sha256("raw_path")(inputs), _rules_source_hash()),
        outputs=lambda inputs: [Path(inputs["out_dir"]) / CLEAN_FILE, Path(inputs["out_dir"]) / REPORT_FILE],
        stamp=_stamp,
    ),
)
def clean_task(raw_path: str, columns: ColumnMap, clean_params: CleanParams, out_dir: str | Path) -> dict:
    """Prefect task around `clean`; publishes the counts as the table artifact `clean-counts`.

    Cached on the inputs, the code it runs (this module, titlegen.neardup, ...) and the raw file's sha256, while the outputs exist.
    """
    from prefect.artifacts import create_table_artifact

    with stamped(_stamp({"out_dir": out_dir})):
        result = clean(raw_path, columns, clean_params, out_dir)
        rows_in = result["rows"] + sum(result["counts"][r] for r in DROP_REASONS)
        create_table_artifact(
            key="clean-counts",
            table=counts_table(result["counts"], rows_in, result["rows"]),
            description=f"Rows changed and dropped by cleaning, by reason ({result['rows']} of {rows_in} kept)",
        )
    return result
