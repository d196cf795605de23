"""Figures only (matplotlib), one module per experiment. Functions take computed tensors or
DataFrames and return a `matplotlib.figure.Figure`; they never run a model.

Figures are built with `Figure()` rather than pyplot, so no GUI backend or global figure state is
involved: the report renders them to PNG with Agg.
"""


def _bpe_byte_table() -> dict[str, int]:
    """GPT-2's byte-level BPE writes each byte as a printable character: printable Latin-1 bytes as
    themselves, the rest (space, newline, control bytes) as characters from U+0100 on, in byte order."""
    kept = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    shifted = [b for b in range(256) if b not in kept]
    return {**{chr(b): b for b in kept}, **{chr(256 + i): b for i, b in enumerate(shifted)}}


_BPE_BYTES = _bpe_byte_table()


def readable_token(piece: str) -> str:
    """A token as the reader knows it: a raw BPE piece decoded ('ĠJohn' -> ' John'), a newline written
    as a visible backslash-n; a piece that is already text (or not UTF-8 once decoded) is kept as it is."""
    text = piece
    if piece and all(c in _BPE_BYTES for c in piece):
        try:
            text = bytes(_BPE_BYTES[c] for c in piece).decode("utf-8")
        except UnicodeDecodeError:  # e.g. 'é' given as text, or half of a multi-byte character
            pass
    return text.replace("\n", "\\n")


def readable_tokens(pieces) -> list[str]:
    return [readable_token(str(p)) for p in pieces]
