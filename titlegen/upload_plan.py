"""What the upload stage sends, and how it describes it: the planned files, the repo names, the report.

`plan_upload` lists every file of a run's upload (final-hf's files, the GGUFs renamed
`<repo-name>-<QUANT>.gguf`, Ollama's `template`/`params`, the model card) with the repo each goes
to; `report_markdown` renders the file table, the Ollama refs and the card(s) for
`<run>/upload/report.md` and the Prefect artifact. No Hub access here (see `tasks/upload.py`).
"""

from dataclasses import dataclass
from pathlib import Path

from titlegen.hub import UploadError
from titlegen.params import PublishParams
from titlegen.records import GgufExportRecord

QUANT_TAGS = {"q8_0": "Q8_0", "bf16": "BF16", "f16": "F16", "f32": "F32"}  # listing order: what Ollama pulls first
# Files of the run the Hub repo must not carry: merge's local records (they hold local paths and
# verification titles), any stray card (ours replaces it) and hidden markers such as `.complete`.
SKIPPED_NAMES = {"export.json", "verification-titles.json", "README.md"}
PLACEHOLDER_REPO = "<HF_ORG>/<HF_REPO>"


@dataclass
class PlannedFile:
    """One file of the upload: where it goes and where its bytes come from (a file, or bytes made here)."""

    repo_id: str
    path_in_repo: str
    source: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size

    def operation(self):
        """The add operation for `create_commit` (it hashes the file once, here)."""
        from huggingface_hub import CommitOperationAdd

        return CommitOperationAdd(path_in_repo=self.path_in_repo, path_or_fileobj=self.data if self.data is not None else self.source)


def gguf_files_in(folder: str | Path) -> dict[str, str]:
    """`{type: path}` for the GGUFs of a folder: from merge's `export.json` when present, else from
    the file names (`*q8_0*.gguf`, `*F16*.gguf`, ...)."""
    folder = Path(folder)
    record = GgufExportRecord.read_optional(folder / "export.json")
    if record is not None and record.files:
        return {kind: str(folder / f.name) for kind, f in record.files.items()}
    found: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.gguf")):
        stem = path.stem.lower()
        kind = next((k for k in ("bf16", "q8_0", "f16", "f32") if k in stem), None)
        if kind is None:
            raise UploadError(f"{path.name}: cannot tell its type; GGUF names must contain one of {sorted(QUANT_TAGS)}.")
        if kind in found:
            raise UploadError(f"{folder} holds two {kind} GGUFs ({Path(found[kind]).name}, {path.name}); keep one.")
        found[kind] = str(path)
    return found


def check_inputs(final_hf: Path, gguf_files: dict[str, str]) -> list[str]:
    problems = []
    if not final_hf.is_dir():
        problems.append(f"final-hf folder {final_hf} does not exist (run merge first, or pass --final-hf)")
    else:
        if not (final_hf / "config.json").is_file():
            problems.append(f"{final_hf} has no config.json: not a Hugging Face model folder")
        if not any(final_hf.glob("*.safetensors")):
            problems.append(f"{final_hf} has no *.safetensors weights")
    for kind, path in gguf_files.items():
        if kind not in QUANT_TAGS:
            problems.append(f"GGUF type {kind!r} is not one of {sorted(QUANT_TAGS)}")
        if not Path(path).is_file():
            problems.append(f"GGUF file {path} ({kind}) does not exist")
    return problems


def plan_upload(
    final_hf: Path, gguf_files: dict[str, str], run_dir: Path, repo_id: str, publish: PublishParams
) -> tuple[list[PlannedFile], dict[str, str], dict[str, str], dict[str, str]]:
    """Every file of the upload, the repo GGUF names, the Ollama refs and the card text(s) by repo."""
    from titlegen.model_card import build_model_card, ollama_repo_files, read_run_info

    gguf_repo = f"{repo_id}-GGUF" if (publish.gguf_companion_repo and gguf_files) else repo_id
    base = repo_id.split("/")[-1]
    names = {kind: f"{base}-{QUANT_TAGS[kind]}.gguf" for kind in QUANT_TAGS if kind in gguf_files}
    refs = {kind: f"hf.co/{gguf_repo}:{QUANT_TAGS[kind]}" for kind in names}

    files = [
        PlannedFile(repo_id, p.relative_to(final_hf).as_posix(), source=p)
        for p in sorted(final_hf.rglob("*"))
        if p.is_file()
        and p.name not in SKIPPED_NAMES
        and not any(part.startswith(".") for part in p.relative_to(final_hf).parts)
    ]
    files += [PlannedFile(gguf_repo, names[kind], source=Path(gguf_files[kind])) for kind in names]

    info = read_run_info(run_dir, final_hf)
    params = info["params"]
    ollama = params.get("ollama") or {}
    if names:
        extra = ollama_repo_files(
            gguf_files[next(iter(names))],  # the Modelfile's FROM: not in either file
            (params.get("clean") or {}).get("max_title_chars", 40),
            temperature=ollama.get("temperature", 0.0),
            num_ctx=ollama.get("num_ctx", 2048),
            **{k: v for k, v in (params.get("evaluation") or {}).items() if k in ("repeat_penalty", "repeat_last_n")},
        )
        files += [PlannedFile(gguf_repo, name, data=data) for name, data in extra.items()]

    kwargs = dict(gguf_repo=gguf_repo if names else None, gguf_files=names, ollama_refs=refs, private=publish.hf_private)
    cards = {repo_id: str(build_model_card(info, repo_id, **kwargs))}
    if gguf_repo != repo_id:
        cards[gguf_repo] = str(build_model_card(info, repo_id, for_gguf_repo=True, **kwargs))
    files += [PlannedFile(r, "README.md", data=text.encode()) for r, text in cards.items()]
    return files, names, refs, cards


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def report_markdown(title: str, lead: str, files: list[PlannedFile], refs: dict[str, str], cards: dict[str, str],
            status: dict[tuple[str, str], str] | None = None) -> str:
    total = sum(f.size for f in files)
    lines = [f"# {title}", "", lead, "", "| repo | file | size | status |", "| --- | --- | --- | --- |"]
    for f in files:
        state = (status or {}).get((f.repo_id, f.path_in_repo), "would upload")
        lines.append(f"| `{f.repo_id}` | `{f.path_in_repo}` | {human(f.size)} | {state} |")
    lines += ["", f"{len(files)} files, {human(total)} in all.", ""]
    if refs:
        lines += ["Ollama pulls:", ""] + [f"- `ollama run {ref}`" for ref in refs.values()] + [""]
    for repo, text in cards.items():
        lines += [f"<details><summary>Model card of <code>{repo}</code> (README.md)</summary>", "", "````markdown", text, "````", "", "</details>", ""]
    return "\n".join(lines)
