"""Citations point at the paper and the reference code, never at notes files a user does not have."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES_FILES = ("prox.md", "sft-synthesis.md", "eval-prompts")  # eval-prompts: also cited without ".md"
SCANNED = ("proxlab", "conf", "docs", "README.md")


def scanned_files():
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            yield path
        else:
            yield from (p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_no_citation_of_notes_files():
    hits = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for line_no, line in enumerate(text.splitlines(), 1):
            hits += [f"{path.relative_to(ROOT)}:{line_no}: {line.strip()}" for note in NOTES_FILES if note in line]
    assert len(list(scanned_files())) > 50  # the scan found the tree, not an empty folder
    assert not hits, "cite the paper's table/section or the reference code's file instead:\n" + "\n".join(hits)
