"""Reading one corpus input (a jsonl / jsonl.gz / json.gz / parquet file, or one shard of a streamed Hugging Face
dataset) into documents, one record at a time, in bounded memory, and never crashing on a bad record.

A *record* is one JSON line or one parquet row. Every record-level problem goes through `corpus.on_bad_line`
(`error`: stop with `BadInputError` naming file:line and the problem; `skip`: count it, log it to the stage's
`bad_lines.jsonl` with file:line, go on): malformed JSON, invalid UTF-8 bytes in a line, a JSON value that is not an
object, a `text` that is missing or not a string (that record only); a binary file among the jsonl (NUL bytes in its
first 8 KiB), a `.gz` that is not gzip, an unreadable parquet file (the file); a truncated or corrupt `.gz`, an
unreadable parquet batch (the records before the damage are kept, the rest of the file is skipped). Two things are not
bad records: lone surrogate escapes (`"\ud800"`: valid JSON, invalid Unicode, common in crawls) are *fixed* — each
becomes U+FFFD, in the text, the id or metadata, and the record counts under `fixed_surrogates` — and NUL characters
in a text are *kept* (valid Unicode, stored by parquet and the tokenizers) and counted under `texts_with_nul`. The
table is in docs/refine.md ("Prepare").

Records are parsed with orjson when it is installed (the standard `json` otherwise); a line orjson rejects is parsed
again with `json` before it is called bad, so the two parsers accept exactly the same records (`json` reads lone
surrogates, NaN/Infinity and integers beyond 64 bits, which orjson rejects or turns into floats).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator
from proxlab.core.logs import get_logger

log = get_logger("prepare")

try:  # 3-5x faster than json.loads; optional so that any environment can still prepare a corpus
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is in requirements/main.txt
    def _fast_loads(line: bytes) -> Any:  # every line takes the exact path (json, surrogates fixed)
        raise ValueError("orjson is not installed")

READ_CHUNK = 1 << 20  # bytes read (and, for .gz, decompressed from) at a time
MAX_LINE_BYTES = 64 << 20  # a longer line (a whole JSON array on one line, say) is one bad record
BINARY_PROBE = 8192  # bytes at the start of a jsonl file in which a NUL byte marks it as binary
MAX_LOGGED_PER_FILE = 1000  # bad records logged per input file (all are counted)
PRINTED_PER_FILE = 3  # bad records printed per input file
_BIG = float(2 ** 63)  # orjson turns integers beyond 64 bits into floats: such records are parsed again with json
_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM = b"\xef\xbb\xbf"
_SKIP = object()  # a blank line: not a record


def _meta_encoder():
    """`json.dumps(meta, sort_keys=True)` for a flat dict of scalars, without building an encoder per call (2x faster);
    the plain call where the C encoder is missing or would disagree."""
    def plain(meta: dict) -> str:
        return json.dumps(meta, sort_keys=True)

    try:
        from json.encoder import c_make_encoder, encode_basestring_ascii

        c = c_make_encoder(None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", True, False,
                           True)
        probe = {"b": 1.5, "a": "\u00e9\x00", "c": None, "d": True, "e": 10 ** 30, "f": float("nan"), "g": -0.0}

        def fast(meta: dict) -> str:
            return "".join(c(meta, 0))

        return fast if fast(probe) == plain(probe) else plain
    except Exception:  # noqa: BLE001 - no C accelerator: the plain call
        return plain


encode_meta = _meta_encoder()


class BadInputError(ValueError):
    """A malformed input record under corpus.on_bad_line=error; the message names file and line."""


@dataclass
class Counts:
    """What one input produced: `read` = kept + sampled_out + bad + empty + duplicate (the stage checks it)."""

    read: int = 0  # records met: JSON lines and parquet rows (blank lines are not records), and bad-file events
    kept: int = 0
    sampled_out: int = 0
    bad: int = 0
    empty: int = 0
    duplicate: int = 0
    fixed_surrogates: int = 0
    texts_with_nul: int = 0
    chars_read: int = 0  # characters of the unique non-empty documents (kept or sampled out)
    chars_kept: int = 0


@dataclass
class BadRecords:
    """The on_bad_line policy for one input: raise (error), or count and remember the first few (skip)."""

    policy: str
    counts: Counts
    log: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, where: str, reason: str) -> None:
        if self.policy == "error":
            raise BadInputError(f"{where}: {reason} (set corpus.on_bad_line=skip to count and skip such records)")
        self.counts.bad += 1
        if len(self.log) < MAX_LOGGED_PER_FILE:
            self.log.append({"where": where, "reason": reason})
        if self.counts.bad <= PRINTED_PER_FILE:
            log.warning(f"prepare: skipping {where}: {reason}")


DATA_SUFFIXES = (".gz", ".zst", ".jsonl", ".json", ".parquet")  # stripped from a file name to give its source


def strip_suffixes(name: str) -> str:
    """A file name without its data extensions (`a.jsonl.gz` → `a`, `c4-train.00000-of-01024.json.gz` →
    `c4-train.00000-of-01024`): only known extensions go, so names that differ before them stay distinct."""
    while True:
        for suffix in DATA_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
        else:
            return name


def source_name(root: Path, path: Path) -> str:
    """A file's `source` and id prefix: its path under the corpus root without its data extensions (`a.jsonl.gz` →
    `a`, `2019-30/0001/en_head.json.gz` → `2019-30/0001/en_head`), so that ids are unique across the files of a
    corpus whenever they are unique within each file."""
    rel = path.relative_to(root) if path != root and root.is_dir() else Path(path.name)
    return relative_source(rel.as_posix())


def relative_source(rel: str) -> str:
    """`source_name` of a path relative to the corpus root (posix)."""
    folder, _, name = rel.rpartition("/")
    return fix_surrogates(f"{folder}/{strip_suffixes(name)}" if folder else strip_suffixes(name))[0]


def fix_surrogates(s: str) -> tuple[str, bool]:
    """`s` with each lone surrogate replaced by U+FFFD, and whether there was one."""
    if s.isascii():
        return s, False
    fixed, n = _SURROGATE.subn("\ufffd", s)
    return fixed, n > 0


def _fix_value(v: Any) -> tuple[Any, bool]:
    if isinstance(v, str):
        return fix_surrogates(v)
    if isinstance(v, dict):
        out, any_fixed = {}, False
        for k, x in v.items():
            k2, f1 = _fix_value(k) if isinstance(k, str) else (k, False)
            x2, f2 = _fix_value(x)
            out[k2] = x2
            any_fixed = any_fixed or f1 or f2
        return out, any_fixed
    if isinstance(v, list):
        pairs = [_fix_value(x) for x in v]
        return [x for x, _ in pairs], any(f for _, f in pairs)
    return v, False


# ---------------------------------------------------------------------------------------------------------------------
# Records: (line or row number, parsed value)


Opener = Callable[[Any], BinaryIO]  # a file's binary stream: `open(path, "rb")`, or an fsspec file of a hub


def open_binary(path: Any) -> BinaryIO:
    return open(path, "rb")


def _file_name(path: Any) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def local_records(path: Any, counts: Counts, bad: BadRecords,
                  opener: Opener | None = None) -> Iterator[tuple[int, Any, Any]]:
    """The records of one file: a local path, or (with `opener`) any location the opener reads (an fsspec URL)."""
    if _file_name(path).endswith(".parquet"):
        return parquet_records(path, counts, bad, opener=opener)
    return jsonl_records(path, counts, bad, opener=opener)


def jsonl_records(path: Any, counts: Counts, bad: BadRecords,
                  opener: Opener | None = None) -> Iterator[tuple[int, Any, Any]]:
    """JSON lines of a plain, gzip- or zstd-compressed file, parsed; bad lines reported (never raised under `skip`)."""
    name = _file_name(path)
    codec = "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else None
    lineno = n = 0
    rest, skipping = b"", False
    opener = opener or open_binary
    chunks = (_gzip_chunks(path, opener) if codec == "gzip" else _zstd_chunks(path, opener) if codec == "zstd"
              else _plain_chunks(path, opener))
    try:
        try:
            for chunk in chunks:
                if lineno == 0 and not rest and not skipping and b"\0" in chunk[:BINARY_PROBE]:
                    n += 1
                    bad(f"{path}:1", "binary file (NUL bytes in its first 8 KiB): not UTF-8 JSON lines; the file is "
                                     "skipped")
                    return
                if skipping:  # the rest of an over-long line
                    cut = chunk.find(b"\n")
                    if cut < 0:
                        continue
                    chunk, skipping = chunk[cut + 1:], False
                buf = rest + chunk if rest else chunk
                view, find, pos = memoryview(buf), buf.find, 0
                while (end := find(b"\n", pos)) >= 0:
                    line = view[pos:end]  # no copy: orjson reads the buffer in place
                    pos = end + 1
                    lineno += 1
                    try:
                        rec = _fast_loads(line)
                    except ValueError:
                        rec = _slow_parse(bytes(line), f"{path}:{lineno}", lineno == 1, counts, bad)
                        if rec is _SKIP:
                            continue
                        n += 1
                        if rec is not None:
                            yield lineno, rec, None
                        continue
                    n += 1
                    yield lineno, rec, line
                rest = buf[pos:]
                if len(rest) > MAX_LINE_BYTES:
                    lineno += 1
                    n += 1
                    bad(f"{path}:{lineno}", f"line longer than {MAX_LINE_BYTES >> 20} MiB: skipped")
                    rest, skipping = b"", True
        except (OSError, EOFError, zlib.error) as e:  # truncated / corrupt compressed data
            n += 1
            bad(f"{path}:{lineno + 1}", _stream_error(e, codec, lineno))
            return
        if rest:  # a last line without a newline
            lineno += 1
            rec = _slow_parse(rest, f"{path}:{lineno}", lineno == 1, counts, bad)
            if rec is not _SKIP:
                n += 1
                if rec is not None:
                    yield lineno, rec, None
    finally:
        counts.read += n
        chunks.close()


def _plain_chunks(path: Any, opener: Opener = open_binary, size: int = READ_CHUNK) -> Iterator[bytes]:
    with opener(path) as f:
        while chunk := f.read(size):
            yield chunk


def _zstd_chunks(path: Any, opener: Opener = open_binary, size: int = READ_CHUNK) -> Iterator[bytes]:
    """The decompressed bytes of a zstd file (every frame, as `zstd -d` reads them; DCLM's `.jsonl.zst`), in large
    chunks. A truncated file raises EOFError after yielding everything before the damage; corrupt data raises
    OSError. Needs the `zstandard` package (requirements/main.txt)."""
    try:
        import zstandard
    except ImportError as e:
        raise RuntimeError(f"{path}: reading .zst files needs the zstandard package (pip install zstandard; it is in "
                           f"requirements/main.txt)") from e
    dctx = zstandard.ZstdDecompressor()
    with opener(path) as f:
        d, started = dctx.decompressobj(), False
        try:
            while buf := f.read(size):
                while buf:
                    started = True
                    out = d.decompress(buf)
                    if out:
                        yield out
                    if d.eof:  # end of a frame: another may follow
                        buf, d, started = d.unused_data, dctx.decompressobj(), False
                    else:
                        buf = b""
        except zstandard.ZstdError as e:
            raise OSError(f"corrupt zstd data: {e}") from None
        if started:
            raise EOFError("Compressed file ended before the end-of-frame marker was reached")


def _gzip_chunks(path: Any, opener: Opener = open_binary, size: int = READ_CHUNK) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file (every member, as `gzip` reads them; CRC and length checked by zlib), in
    large chunks: fewer Python-level calls than `gzip.open`'s 8 KiB reads. A truncated file raises EOFError after
    yielding everything before the damage; corrupt data raises zlib.error."""
    wbits = 16 + zlib.MAX_WBITS
    with opener(path) as f:
        d, started = zlib.decompressobj(wbits), False
        while buf := f.read(size):
            while buf:
                if not started:
                    buf = buf.lstrip(b"\0")  # zero padding between or after members, as gzip allows
                    if not buf:
                        break
                    started = True
                out = d.decompress(buf)
                if out:
                    yield out
                if d.eof:  # end of a member: another may follow
                    buf, d, started = d.unused_data, zlib.decompressobj(wbits), False
                else:
                    buf = b""
        if started:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")


def _stream_error(e: BaseException, codec: str | None, lines_read: int) -> str:
    after = f"after {lines_read} lines; the rest of the file is skipped"
    if isinstance(e, EOFError):
        return f"truncated {codec} file: the compressed data ends before its end-of-stream marker ({after})"
    corrupt = (codec == "gzip" and isinstance(e, zlib.error)) or (codec == "zstd" and "corrupt zstd" in str(e))
    if corrupt and lines_read == 0:
        return f"not a {codec} file, or corrupt from its start ({e}); the file is skipped"
    kind = f"corrupt {codec} data" if corrupt else "read error"
    return f"{kind} ({type(e).__name__}: {e}; {after})"


def _slow_parse(line: bytes, where: str, first: bool, counts: Counts, bad: BadRecords) -> Any:
    """A line the fast parser rejected: blank (→ _SKIP), a record `json` reads (lone surrogates fixed), or bad
    (reported, → None)."""
    s = line.strip()
    if first and s.startswith(_BOM):
        s = s[len(_BOM):].strip()
    if not s:
        return _SKIP
    try:
        text = s.decode("utf-8")
    except UnicodeDecodeError as e:
        bad(where, f"invalid UTF-8 ({e.reason} at byte {e.start})")
        return None
    try:
        rec, fixed = _fix_value(json.loads(text))
    except json.JSONDecodeError as e:
        bad(where, f"malformed JSON ({e.msg} at column {e.colno})")
        return None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        bad(where, f"malformed JSON ({e})")
        return None
    except RecursionError:
        bad(where, "malformed JSON (nested too deeply)")
        return None
    if fixed:
        counts.fixed_surrogates += 1
    return rec


def parquet_records(path: Any, counts: Counts, bad: BadRecords, batch_rows: int = 1024,
                    opener: Opener | None = None) -> Iterator[tuple[int, Any, Any]]:
    """Rows of a parquet file, streamed by row batches (never the whole table)."""
    import pyarrow.parquet as pq

    row = n = 0
    handle = None
    try:
        try:
            handle = opener(path) if opener else None
            pf = pq.ParquetFile(handle if handle is not None else path)
            batches = pf.iter_batches(batch_size=batch_rows)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one bad record, by policy
            n += 1
            bad(f"{path}:1", f"not a readable parquet file ({type(e).__name__}: {e}); the file is skipped")
            return
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001
                n += 1
                bad(f"{path}:{row + 1}", f"unreadable parquet data ({type(e).__name__}: {e}); the rest of the file "
                                         f"is skipped")
                break
            try:
                rows = batch.to_pylist()
            except Exception:  # noqa: BLE001 - e.g. invalid UTF-8 in a string column: find the row(s)
                rows = []
                for j in range(batch.num_rows):
                    try:
                        rows.append(batch.slice(j, 1).to_pylist()[0])
                    except Exception as e:  # noqa: BLE001
                        rows.append(_BadRow(f"unreadable row ({type(e).__name__}: {e})"))
            for rec in rows:
                row += 1
                n += 1
                if isinstance(rec, _BadRow):
                    bad(f"{path}:{row}", rec.reason)
                    continue
                yield row, rec, None
    finally:
        counts.read += n
        if handle is not None:
            handle.close()


@dataclass
class _BadRow:
    reason: str


def hf_records(ds: Any, counts: Counts) -> Iterator[tuple[int, Any, Any]]:
    """Rows of one shard of a streamed Hugging Face dataset (network errors propagate: the shard is redone)."""
    n = 0
    try:
        for n, rec in enumerate(ds, 1):
            yield n, rec, None
    finally:
        counts.read += n


# ---------------------------------------------------------------------------------------------------------------------
# Documents: (id, text, meta JSON) from records


def documents(records: Iterator[tuple[int, Any, Any]], where_prefix: str, id_prefix: str, text_field: str,
              id_field: str | None, min_chars: int, counts: Counts, bad: BadRecords) -> Iterator[tuple[str, str, str]]:
    """The usable documents of one input: (id, text, meta JSON), in input order. Bad records go to `bad`; texts
    shorter than `min_chars` after stripping count as `empty`. The id is `<id_prefix><id field>` (the line or row
    number when the record has none); meta holds the record's other scalar fields (strings and numbers shorter than
    2000 characters, booleans, nulls) as `json.dumps(meta, sort_keys=True)`."""
    skip_keys = {text_field, id_field}
    dumps = encode_meta
    for lineno, rec, raw in records:
        if not isinstance(rec, dict):
            bad(f"{where_prefix}:{lineno}", f"expected a JSON object, got {type(rec).__name__}")
            continue
        text = rec.get(text_field)
        if not isinstance(text, str):
            bad(f"{where_prefix}:{lineno}", f"field {text_field!r} missing or not a string")
            continue
        n = len(text)
        if n < min_chars or (n and (text[0].isspace() or text[-1].isspace()) and len(text.strip()) < min_chars):
            counts.empty += 1
            continue
        meta, inexact = _meta(rec, skip_keys)
        raw_id = rec.get(id_field) if id_field else None
        if (inexact or (type(raw_id) is float and not -_BIG < raw_id < _BIG)) and raw is not None:
            exact = _exact_record(raw)  # orjson may have read an integer beyond 64 bits as a float: json is exact
            if isinstance(exact, dict):
                meta, _ = _meta(exact, skip_keys)
                raw_id = exact.get(id_field) if id_field else None
        doc_id = f"{id_prefix}{raw_id if raw_id is not None else lineno}"
        if "\x00" in text:
            counts.texts_with_nul += 1
        yield doc_id, text, dumps(meta)


def _meta(rec: dict, skip_keys: set) -> tuple[dict[str, Any], bool]:
    """The record's small scalar fields (str/int/float shorter than 2000 characters, bool, None), and whether one is
    a float orjson may have made of a big integer."""
    meta: dict[str, Any] = {}
    inexact = False
    for k, v in rec.items():
        if k in skip_keys:
            continue
        t = type(v)
        if t is str:
            if len(v) < 2000:
                meta[k] = v
        elif t is float:
            meta[k] = v
            if not -_BIG < v < _BIG and v == v:
                inexact = True
        elif t is bool or v is None:
            meta[k] = v
        elif t is int:
            if -_BIG < v < _BIG or len(str(v)) < 2000:
                meta[k] = v
        elif isinstance(v, (str, int, float, bool)) and len(str(v)) < 2000:
            meta[k] = v
    return meta, inexact


def _exact_record(raw: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(raw).strip().removeprefix(_BOM).decode("utf-8"))
    except (ValueError, RecursionError):
        return None
