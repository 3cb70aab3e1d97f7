"""Rebuild a SentencePiece `tokenizer.model` from a Gemma `tokenizer.json`, for the GGUF converter.

transformers 5 saves Gemma's tokenizer as `tokenizer.json` only; without `tokenizer.model` the
converter takes its BPE path and stops at "BPE pre-tokenizer was not recognized". This program
writes a SentencePiece BPE model from a tokenizer.json whose vocabulary came from one (Gemma's).
Scores fall with the id, as in Gemma's own tokenizer.model (score = offset - id), which is the merge
priority llama.cpp's SPM tokenizer uses.

It runs with the converter venv's python (which has protobuf; see `titlegen.gguf_converter`) as a
script, so it imports nothing from titlegen:

    .venv-gguf/bin/python titlegen/spm_from_tokenizer_json.py final-hf/tokenizer.json out/tokenizer.model

`spm_pieces` is plain Python (no protobuf), so the piece table can be checked anywhere.
"""

import json
import re
import sys

# Gemma's control pieces (<start_of_turn>, <unused12>, ...): llama.cpp matches them whole in a prompt.
CONTROL = re.compile(r"^<(pad|eos|bos|unk|mask|[a-z]+(_[a-z]+)+|unused[0-9]+)>$")
# Runs of newlines, tabs or spaces that Gemma's vocabulary holds as single pieces.
WHITESPACE_RUN = re.compile(r"^(\n+|\t+| {2,})$")


def spm_pieces(tj: dict) -> list[tuple[str, float, str]]:
    """(piece, score, type) for every id 0..max, type one of NORMAL, UNKNOWN, BYTE, CONTROL, USER_DEFINED."""
    vocab = tj["model"]["vocab"]
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    by_id = {i: piece for piece, i in vocab.items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    # transformers' GGUF loader drops one byte piece (<0x0A>, whose text collides with a normal "\n"
    # piece): give each missing id the missing byte piece names in order.
    size = max(by_id) + 1
    gaps = [i for i in range(size) if i not in by_id]
    lost = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in vocab]
    for n, i in enumerate(gaps):
        by_id[i] = lost[n] if n < len(lost) else f"<titlegen_unused_{i}>"
    unk = tj["model"].get("unk_token", "<unk>")
    pieces = []
    for i in range(size):
        piece = by_id[i]
        if piece == unk:
            pieces.append((piece, 0.0, "UNKNOWN"))
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            pieces.append((piece, 0.0, "BYTE"))
        elif (i in added and added[i].get("special")) or CONTROL.match(piece):
            pieces.append((piece, -1000.0, "CONTROL"))
        elif i in added or WHITESPACE_RUN.match(piece):
            pieces.append((piece, -1000.0, "USER_DEFINED"))
        else:
            pieces.append((piece, -float(i), "NORMAL"))
    return pieces


def build_model(tj: dict):
    """The SentencePiece `ModelProto` for `tj` (needs protobuf)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    pieces = spm_pieces(tj)
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(pieces)
    m.trainer_spec.byte_fallback = bool(tj["model"].get("byte_fallback"))
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    for piece, score, kind in pieces:
        p = m.pieces.add(piece=piece, score=score)
        if kind != "NORMAL":
            p.type = getattr(pb.ModelProto.SentencePiece, kind)
    # -1, as the in-string program this module replaced always wrote (its id lookup never matched);
    # every GGUF export was verified against final-hf with these values. The converter takes the
    # special token ids from the HF folder (gguf.SpecialVocab), and piece types mark <unk> and friends.
    for name in ("unk", "bos", "eos", "pad"):
        setattr(m.trainer_spec, name + "_id", -1)
    return m


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(f"usage: python {__file__} <tokenizer.json> <tokenizer.model>", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        tj = json.load(f)
    with open(args[1], "wb") as f:
        f.write(build_model(tj).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
