"""The program that rebuilds `tokenizer.model` from a Gemma `tokenizer.json` for the GGUF converter."""

import subprocess

import pytest

from titlegen import spm_from_tokenizer_json as spm


def test_piece_types_and_lost_byte_pieces():
    tj = {
        "model": {"unk_token": "<unk>", "byte_fallback": True,
                  "vocab": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<0x00>": 5, "\n\n": 6, "▁台": 7}},
        "added_tokens": [{"id": 8, "content": "<start_of_turn>", "special": True}, {"id": 9, "content": "<mask2>", "special": False}],
    }
    pieces = spm.spm_pieces(tj)
    assert [p for p, _, _ in pieces][:5] == ["<pad>", "<eos>", "<bos>", "<unk>", "<0x01>"]  # id 4 gets the first lost byte
    kinds = {p: (score, kind) for p, score, kind in pieces}
    assert kinds["<unk>"] == (0.0, "UNKNOWN") and kinds["<0x01>"] == (0.0, "BYTE")
    assert kinds["<start_of_turn>"] == (-1000.0, "CONTROL") and kinds["<eos>"][1] == "CONTROL"
    assert kinds["\n\n"] == (-1000.0, "USER_DEFINED") and kinds["<mask2>"][1] == "USER_DEFINED"
    assert kinds["▁台"] == (-7.0, "NORMAL")  # score falls with the id: llama.cpp's merge priority


def test_program_writes_a_model_sentencepiece_loads(gemma_tokenizer_dir, tmp_path):
    """Run as the GGUF export runs it: a script under the converter venv's python."""
    from titlegen.gguf_converter import ConverterMissing, converter_python

    try:
        python = converter_python()
    except ConverterMissing as err:
        pytest.skip(str(err))
    out = tmp_path / "tokenizer.model"
    subprocess.run([str(python), spm.__file__, str(gemma_tokenizer_dir / "tokenizer.json"), str(out)], check=True)
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(out))
    assert sp.get_piece_size() == 262144
    assert sp.id_to_piece(105) == "<start_of_turn>" and sp.is_control(105) and sp.is_control(106)


def test_program_usage_error(capsys):
    assert spm.main(["only-one"]) == 2
    assert "usage" in capsys.readouterr().err
