"""The Ollama Modelfile of a titlegen model: rendered from `serving/ollama/Modelfile.template`.

The Modelfile is the single description of the served model. The CLI path sends it as is
(`ollama create -f`), the pre-0.5.5 REST path sends its text, and the current REST path sends the
fields `parse_modelfile` reads back from it, so every create path serves the same template and
parameters. Its `TEMPLATE` comes from `titlegen.prompt.ollama_template`, so Ollama builds exactly
the prompt the model was trained and evaluated on.

Rendering refuses anything that would make Ollama quietly do something else: a variable left
unresolved, a `FROM` path that does not exist (Ollama would try to pull a model of that name),
`hf://` references (rejected by Ollama), a template containing the Modelfile's `\"\"\"` quote, and a
control character or line break in any value (a line break would start a new directive: a run
folder whose name holds a newline and then `SYSTEM "..."` must not add one); only the TEMPLATE's own
newlines are kept.
"""

import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY
from titlegen.paths import serving_dir
from titlegen.prompt import END_OF_TURN, ollama_template

TEMPLATE_FILE = "Modelfile.template"
# hf.co/<org>/<repo>:<quant>; the quant tag is required so the file Ollama pulls is explicit.
HF_REF = re.compile(r"^(hf\.co|huggingface\.co)/[\w.-]+/[\w.-]+:[\w.-]+$")
# C0/C1 control characters (line breaks included) and Unicode line/paragraph separators.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def refuse_control(what: str, value: str, allow: str = "") -> str:
    """`value` unchanged, or ValueError when it holds a control character or line break not in `allow`."""
    bad = sorted({c for c in CONTROL.findall(value) if c not in allow})
    if bad:
        raise ValueError(f"{what} {value[:80]!r} holds control characters {bad}: a Modelfile value must be one line "
                         "of printable text (rename the file or folder, or fix the parameter).")
    return value


def modelfile_template_path() -> Path:
    return serving_dir() / "ollama" / TEMPLATE_FILE


def num_predict_for(max_title_chars: int) -> int:
    """Token budget of one title: the same bound evaluation generates with, so a title that passed
    the gate is never cut short by Ollama (see `titlegen.generate.max_new_tokens_for`)."""
    from titlegen.generate import max_new_tokens_for

    return max_new_tokens_for(max_title_chars)


def check_source(source: str | Path) -> str:
    """The `FROM` value for `source`: an `hf.co/...:<quant>` reference or an existing local path
    (made absolute, since Ollama resolves a relative path against the Modelfile's folder)."""
    text = refuse_control("Modelfile FROM", str(source).strip())
    if not text:
        raise ValueError("Modelfile FROM is empty: pass a GGUF path or hf.co/<org>/<repo>:<quant>.")
    if text.startswith("hf://"):
        raise ValueError(f"Modelfile FROM {text!r}: Ollama rejects hf:// references; use hf.co/<org>/<repo>:<quant>.")
    if text.startswith(("hf.co/", "huggingface.co/")):
        if not HF_REF.match(text):
            raise ValueError(f"Modelfile FROM {text!r} must look like hf.co/<org>/<repo>:<quant> (e.g. :Q8_0), naming the GGUF to pull.")
        return text
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(
            f"Modelfile FROM {path} does not exist; Ollama would silently treat it as a model to pull. "
            "Pass the GGUF written by the merge stage (or an hf.co/<org>/<repo>:<quant> reference)."
        )
    return str(path)


@dataclass(frozen=True)
class ModelfileValues:
    """The values of the template's variables, before rendering."""

    source: str
    max_title_chars: int
    temperature: float = 0.0
    num_ctx: int = 2048
    extra_stop: tuple[str, ...] = field(default_factory=tuple)
    # The evaluation's decoding rule (EvalParams.repeat_penalty / repeat_last_n): llama.cpp's penalty, which
    # titlegen.generate.LastNRepetitionPenalty reproduces, so Ollama serves the titles that passed the gate.
    repeat_penalty: float = REPEAT_PENALTY
    repeat_last_n: int = REPEAT_LAST_N

    def variables(self) -> dict[str, str]:
        template = ollama_template(self.max_title_chars)
        if '"""' in template:
            raise ValueError('The prompt template contains """, which would end the Modelfile TEMPLATE early.')
        stops = []
        for stop in self.extra_stop:
            if not stop or any(c in stop for c in '"\n\\'):
                raise ValueError(f"extra_stop {stop!r}: a Modelfile stop must be non-empty and hold no quote, backslash or newline.")
            stops.append(f'PARAMETER stop "{refuse_control("extra_stop", stop)}"')
        variables = {
            "FROM": check_source(self.source),
            "TEMPLATE": template,
            "EXTRA_STOP": "\n".join(stops),
            "TEMPERATURE": f"{self.temperature:g}",
            "NUM_CTX": str(self.num_ctx),
            "NUM_PREDICT": str(num_predict_for(self.max_title_chars)),
            "REPEAT_PENALTY": f"{self.repeat_penalty:g}",
            "REPEAT_LAST_N": str(int(self.repeat_last_n)),
        }
        for key, value in variables.items():
            # TEMPLATE is multi-line by design (inside triple quotes); EXTRA_STOP joins one checked line per stop.
            refuse_control(key, value, allow="\n" if key in ("TEMPLATE", "EXTRA_STOP") else "")
        return variables


def render_modelfile(values: ModelfileValues, template_text: str | None = None) -> str:
    """The Modelfile text; raises on any `${VARIABLE}` the values do not define."""
    text = template_text if template_text is not None else modelfile_template_path().read_text(encoding="utf-8")
    tmpl = string.Template(text)
    variables = values.variables()
    unknown = sorted(set(tmpl.get_identifiers()) - set(variables))
    if unknown or not tmpl.is_valid():
        raise ValueError(f"{TEMPLATE_FILE} uses variables titlegen does not define: {unknown or 'invalid $ syntax'}; known: {sorted(variables)}.")
    rendered = tmpl.substitute(variables)
    if "${" in rendered:
        raise ValueError(f"Rendered Modelfile still holds an unresolved variable: {rendered[rendered.index('${'):][:40]!r}")
    return rendered


@dataclass
class ModelfileParts:
    """What a Modelfile says, in the fields of the current REST create request."""

    source: str
    template: str | None = None
    system: str | None = None
    parameters: dict[str, object] = field(default_factory=dict)


def _value(raw: str) -> object:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _multiline_value(rest: str, lines: list[str], i: int, what: str) -> tuple[str | int | float, int]:
    """A directive's value, which may run over the lines after line `i - 1` inside triple quotes (the TEMPLATE, and
    the line-break stop); returns it and the index of the line after it."""
    if not rest.startswith('"""'):
        return _value(rest), i
    body = rest[3:]
    while '"""' not in body:
        if i >= len(lines):
            raise ValueError(f'Modelfile {what} has no closing """.')
        body += "\n" + lines[i]
        i += 1
    return body[: body.index('"""')], i


def parse_modelfile(text: str) -> ModelfileParts:
    """Read back FROM, TEMPLATE, SYSTEM and PARAMETER lines (the directives titlegen writes).

    Any other directive is an error, so an edit to the template that the REST path could not
    carry is caught instead of being dropped silently. `stop` always becomes a list.
    """
    source = None
    parts = ModelfileParts(source="")
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        directive, _, rest = line.partition(" ")
        directive = directive.upper()
        if directive in ("TEMPLATE", "SYSTEM"):
            value, i = _multiline_value(rest.strip(), lines, i, directive)
            setattr(parts, directive.lower(), str(value))
        elif directive == "FROM":
            source = rest.strip()
        elif directive == "PARAMETER":
            key, _, raw = rest.strip().partition(" ")
            value, i = _multiline_value(raw.strip(), lines, i, f"PARAMETER {key}")
            if key == "stop":
                parts.parameters.setdefault("stop", []).append(value)
            else:
                parts.parameters[key] = value
        else:
            raise ValueError(f"Modelfile directive {directive} is not supported by titlegen's REST create; remove it from {TEMPLATE_FILE}.")
    if not source:
        raise ValueError("Modelfile has no FROM line.")
    parts.source = source
    if END_OF_TURN not in parts.parameters.get("stop", []):
        raise ValueError(f'Modelfile must keep PARAMETER stop "{END_OF_TURN}" (the end of the model turn).')
    return parts
