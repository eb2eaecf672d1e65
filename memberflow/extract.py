"""Extract: one channel table's partition for one day → landed Parquet, quarantine and the contact vault.

For a table and a local date D, extract reads ``<data_dir>/<channel>/<table>/dt=D/*.{csv,jsonl,parquet}``,
checks every row against the contract, coerces types, turns China local times into UTC (keeping the local
date as ``local_date``), and replaces each plain phone column by ``phone_token`` and ``phone_masked``.
Rows that break the contract go to the quarantine with a reason. Every run accounts for its rows
(read = landed + quarantined) and writes a report; when the quarantined share passes the table's limit,
nothing is landed for that date and the run fails with a message naming the reasons.

Landing is write-audit-publish: extract writes the partition to ``$MEMBERFLOW_HOME/audit/`` (report status
``staged``); the landing quality gate validates it there; ``publish_partition`` then swaps it into
``landing/`` in one rename (status ``ok``), or ``reject_partition`` keeps it in the audit area for inspection
(status ``rejected``). Readers of ``landing/`` never see an unaudited partition, and a failed re-extract
or a rejected partition leaves the date's previously published version as it was.

Outputs replace exactly the date's partition and depend only on the input files, the keys and the logical
date, so rerunning a date gives byte-identical files.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import shutil
import uuid
import zlib
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberflow.core.contracts import (
    ARROW_TYPES,
    CONTRACTS,
    ID_FORMS,
    LOCAL_TZ,
    BadValue,
    Kind,
    Reason,
    TableContract,
    coerce_column,
    get_contract,
    local_dates,
    patched,
)
from memberflow.core.phones import mask_phone, normalize_phone, phone_token, redact_phones, replace_phones
from memberflow.core.settings import Settings
from memberflow.core.vault import ContactVault

log = logging.getLogger(__name__)

# The data files a partition may hold, by format; names are matched case-insensitively, and CSV and JSON
# lines may come gzipped (Parquet compresses inside the file).
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet", ".csv.gz": "csv", ".jsonl.gz": "jsonl"}
# A physical line longer than this is quarantined unread (a runaway export); its raw text is cut to 1,000.
MAX_ROW_BYTES = 65_536
csv.field_size_limit(16 * MAX_ROW_BYTES)  # a quoted field may span lines; the check above bounds each line
# What a blank line may hold (bytes.strip's whitespace): the same for CSV and JSON lines.
ASCII_SPACE = " \t\n\r\x0b\x0c"
METADATA_COLUMNS = ("local_date", "_source_file", "_row_number", "_loaded_at")


class MissingPartitionError(FileNotFoundError):
    """The channel delivered no partition for the date."""


class DataDirError(FileNotFoundError):
    """The channel data folder is missing, or holds none of the channels' table folders."""


def require_data_dir(data_dir: Path) -> Path:
    """``data_dir`` when it is a folder holding at least one ``<channel>/<table>`` folder of the contracts."""
    data_dir = Path(data_dir)
    what = "does not exist" if not data_dir.is_dir() else None
    if what is None and not any((data_dir / c.channel / c.table).is_dir() for c in CONTRACTS):
        example = CONTRACTS[0]
        what = f"holds none of the channels' table folders (such as {example.channel}/{example.table}/)"
    if what:
        raise DataDirError(
            f"the channel data folder {data_dir} {what}: pass --data-dir or set MEMBERFLOW_DATA_DIR to the "
            "folder the channels deliver to (<channel>/<table>/dt=YYYY-MM-DD/)"
        )
    return data_dir


class PartitionRefusedError(RuntimeError):
    """The partition cannot land as delivered; the message says why and what to do."""


class QuarantineThresholdError(PartitionRefusedError):
    """Too large a share of a partition's rows broke the contract."""


class SchemaDriftError(PartitionRefusedError):
    """A file's columns no longer match the contract: a renamed column would land as nulls."""


class UnreadableFileError(PartitionRefusedError):
    """A data file of the partition could not be read at all: its rows are unknown."""


@dataclass
class RawRow:
    source_file: str
    row_number: int
    raw: str
    values: dict[str, object] | None = None  # as read (JSON gives numbers, booleans); checked as _as_text
    reason: Reason | None = None
    detail: str = ""


@dataclass
class ExtractReport:
    channel: str
    table: str
    date: str
    status: str = "ok"
    files: list[str] = field(default_factory=list)
    refused_files: dict[str, str] = field(default_factory=dict)  # a file not read -> why
    # every file of the source partition -> file_fingerprint: a file added or changed later re-lands the day
    source_files: dict[str, str] = field(default_factory=dict)
    read: int = 0
    landed: int = 0
    quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    invalid_phones: int = 0
    phones_hidden: int = 0  # phones found outside the phone column: tokenized (codes) or masked (notes)
    limit: float = 0.0
    landed_path: str | None = None
    quarantine_path: str = ""
    vault_path: str | None = None
    message: str = ""
    quality: str = ""  # landing gate verdict once audited: passed | warning | failed

    @property
    def quarantined_share(self) -> float:
        return self.quarantined / self.read if self.read else 0.0

    def to_dict(self) -> dict:
        data = self.__dict__.copy()
        data["quarantined_share"] = round(self.quarantined_share, 6)
        return data


# --- locating and reading a partition -------------------------------------------------------------------


def partition_dir(root: Path, channel: str, table: str, day: date) -> Path:
    return root / channel / table / f"dt={day.isoformat()}"


def file_fingerprint(path: Path) -> str:
    """Size and modification time: what tells a re-landed partition file from the one seen before."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _source_files(data_dir: Path, files: Sequence[Path]) -> dict[str, str]:
    return {p.relative_to(data_dir).as_posix(): file_fingerprint(p) for p in sorted(files)}


def partition_days(folder: Path) -> dict[date, Path]:
    """The ``dt=YYYY-MM-DD`` partitions directly under ``folder``, by date; other names are ignored."""
    days = {}
    for path in Path(folder).glob("dt=*"):
        try:
            days[date.fromisoformat(path.name[3:])] = path
        except ValueError:
            continue
    return dict(sorted(days.items()))


def file_format(path: Path) -> str | None:
    """``csv``, ``jsonl`` or ``parquet`` for a data file (any case, CSV and JSON lines optionally .gz)."""
    name = path.name.lower()
    return next((kind for suffix, kind in FORMATS.items() if name.endswith(suffix)), None)


def _refusal(path: Path) -> str:
    suffix = "".join(path.suffixes[-2:]).lower() or "no extension"
    if suffix.endswith((".zip", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".tgz")):
        return f"compressed as {suffix}: only gzip (.csv.gz, .jsonl.gz) is read; unpack it or re-export"
    return (
        f"not a data file ({suffix}): a partition holds .csv, .jsonl or .parquet files (.csv.gz, .jsonl.gz)"
    )


def list_partition_files(
    data_dir: Path, contract: TableContract, day: date
) -> tuple[list[Path], dict[Path, str]]:
    """The partition's data files, and every other file with the reason it is not read (names starting
    with ``.`` or ``_``, such as ``_SUCCESS`` markers, are skipped)."""
    folder = partition_dir(data_dir, contract.channel, contract.table, day)
    if not folder.is_dir():
        raise MissingPartitionError(
            f"{contract.name}: no partition for {day.isoformat()} (expected folder {folder})"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    return [p for p in files if file_format(p)], {p: _refusal(p) for p in files if not file_format(p)}


def read_rows(path: Path, data_dir: Path, contract: TableContract) -> Iterator[RawRow]:
    relative = path.relative_to(data_dir).as_posix()
    kind = file_format(path)
    if kind == "parquet":
        yield from _read_parquet(path, relative)
        return
    try:
        payload = (
            gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
        )
    except (OSError, EOFError, zlib.error) as exc:
        yield RawRow(relative, 0, "", reason=Reason.MALFORMED_ROW, detail=f"unreadable gzip file: {exc}")
        return
    if kind == "csv":
        yield from _read_csv(payload, relative, contract)
    else:
        yield from _read_jsonl(payload, relative)


def _undecodable(relative: str, line_number: int, line: bytes) -> RawRow:
    return RawRow(
        relative,
        line_number,
        line.decode("utf-8", "backslashreplace").rstrip("\r\n"),
        reason=Reason.UNDECODABLE_BYTES,
        detail="not valid UTF-8",
    )


def _read_csv(payload: bytes, relative: str, contract: TableContract) -> Iterator[RawRow]:
    """Rows of a UTF-8 CSV with a header. ``row_number`` is the physical line number (header = 1)."""
    lines = payload.splitlines(keepends=True)
    if not lines:
        return
    if lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    try:
        header = next(csv.reader([lines[0].decode("utf-8")]))
    except UnicodeDecodeError:
        # Without a readable header no row can be interpreted: every line is quarantined as such.
        for number, line in enumerate(lines, start=1):
            yield _undecodable(relative, number, line)
        return
    header = [h.strip() for h in header]
    decoded: list[tuple[int, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) > MAX_ROW_BYTES:
            yield _oversize(relative, number, line)
            continue
        try:
            decoded.append((number, line.decode("utf-8")))
        except UnicodeDecodeError:
            yield _undecodable(relative, number, line)
    position = 0
    while position < len(decoded):
        position = yield from _csv_records(decoded, position, header, relative)


def _csv_records(
    decoded: list[tuple[int, str]], start_at: int, header: list[str], relative: str
) -> Generator[RawRow, None, int]:
    """Rows of the CSV lines ``decoded[start_at:]`` to the end (returns ``len(decoded)``), or up to a record
    that swallowed the lines after an unclosed quote: its first line is quarantined and the index of the
    line after it returned, to read again from there."""
    reader = csv.reader(text for _, text in decoded[start_at:])
    consumed = 0
    while True:
        error = None
        try:
            fields: list[str] | None = next(reader)
        except StopIteration:
            return len(decoded)
        except csv.Error as exc:
            fields, error = None, str(exc)
        start, consumed = consumed, reader.line_num
        first = start_at + start
        number, text = decoded[first]
        span = max(consumed - start, 1)
        if fields is not None and len(fields) == len(header):
            raw = "".join(t for _, t in decoded[first : first + span]).rstrip("\r\n")
            yield RawRow(relative, number, raw, values=dict(zip(header, fields, strict=True)))
        elif fields is not None and (not fields or (len(fields) == 1 and not fields[0].strip(ASCII_SPACE))):
            continue  # a blank line is not a row (a line of other characters, \x1c or U+00A0, is one)
        elif fields is not None and span == 1:
            detail = f"{len(fields)} fields where the header has {len(header)}"
            yield RawRow(relative, number, text.rstrip("\r\n"), reason=Reason.MALFORMED_ROW, detail=detail)
        else:
            detail = "a quoted field opened on this line is not closed " + (
                f"({error})" if error else f"({span} lines read as one row)"
            )
            yield RawRow(relative, number, text.rstrip("\r\n"), reason=Reason.MALFORMED_ROW, detail=detail)
            return first + 1


def _oversize(relative: str, number: int, line: bytes) -> RawRow:
    text = line[:1000].decode("utf-8", "replace").rstrip("\r\n")
    detail = f"a row of {len(line):,} bytes, over the {MAX_ROW_BYTES:,} a row may have"
    return RawRow(relative, number, text, reason=Reason.MALFORMED_ROW, detail=detail)


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


# JSON lines are parsed this many at a time, as one JSON array; a batch holding a bad line is read again
# line by line, so that line gets its own reason.
JSONL_BATCH = 512


def _read_jsonl(payload: bytes, relative: str) -> Iterator[RawRow]:
    """Rows of a JSON lines file, one object per line (``row_number`` = line number; blank lines skipped)."""
    lines = [(n, line) for n, line in enumerate(payload.splitlines(keepends=True), start=1) if line.strip()]
    for start in range(0, len(lines), JSONL_BATCH):
        batch = lines[start : start + JSONL_BATCH]
        parsed = _parse_jsonl_batch(batch)
        if parsed is None:
            yield from (_jsonl_row(relative, number, line) for number, line in batch)
            continue
        for (number, _), (text, obj) in zip(batch, parsed, strict=True):
            yield RawRow(relative, number, text, values=obj)


def _parse_jsonl_batch(lines: list[tuple[int, bytes]]) -> list[tuple[str, dict]] | None:
    """(line, object) of each line, when every one is a JSON object of valid UTF-8 within MAX_ROW_BYTES;
    None when any is not."""
    try:
        texts = [line.decode("utf-8").rstrip("\r\n") for _, line in lines]
        objects = json.loads("[" + ",".join(texts) + "]")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        len(objects) != len(lines)  # a line holding two values, or none
        or not all(type(obj) is dict for obj in objects)
        or any(len(line) > MAX_ROW_BYTES for _, line in lines)
    ):
        return None
    return list(zip(texts, objects, strict=True))


def _jsonl_row(relative: str, number: int, line: bytes) -> RawRow:
    if len(line) > MAX_ROW_BYTES:
        return _oversize(relative, number, line)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return _undecodable(relative, number, line)
    raw = text.rstrip("\r\n")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawRow(relative, number, raw, reason=Reason.MALFORMED_ROW, detail=f"invalid JSON: {exc.msg}")
    if not isinstance(obj, dict):
        return RawRow(relative, number, raw, reason=Reason.MALFORMED_ROW, detail="not a JSON object")
    return RawRow(relative, number, raw, values=obj)


def _read_parquet(path: Path, relative: str) -> Iterator[RawRow]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        yield RawRow(relative, 0, "", reason=Reason.MALFORMED_ROW, detail=f"unreadable Parquet file: {exc}")
        return
    for number, record in enumerate(table.to_pylist(), start=1):
        values = {k: _as_text(v) for k, v in record.items()}
        yield RawRow(relative, number, json.dumps(values, ensure_ascii=False), values=values)


# --- checking rows --------------------------------------------------------------------------------------


@dataclass
class _Checked:
    landed: pa.Table  # the landed schema but _loaded_at
    quarantined: list[RawRow]
    vault: dict[str, str]  # phone_token -> plain phone
    invalid_phones: int
    phones_hidden: int = 0


def _phone_column(contract: TableContract) -> str | None:
    phones = [c.name for c in contract.columns if c.kind is Kind.PHONE]
    assert len(phones) <= 1, f"{contract.name}: one plain phone column per table is supported"
    return phones[0] if phones else None


def _quarantine(row: RawRow, reason: Reason, detail: str, quarantined: list[RawRow]) -> None:
    row.reason, row.detail = reason, detail
    quarantined.append(row)


def check_rows(rows: Sequence[RawRow], contract: TableContract, day: date, id_key: bytes) -> _Checked:
    """Coerce every row; return the typed rows to land and the rows to quarantine (with reason and detail).

    The partition is checked a column at a time (``coerce_column``); a row's reason is that of its first
    bad column in contract order, as if it were checked value by value. After the types: plain phones
    become tokens, phones written in other columns are hidden, identifiers are checked against their type's
    form, and repeated keys are resolved (``_drop_duplicates``).
    """
    latest = datetime.combine(day + timedelta(days=1), time(), LOCAL_TZ).astimezone(UTC)
    quarantined = [row for row in rows if row.reason is not None]
    required = frozenset(contract.required)
    candidates: list[RawRow] = []
    for row in rows:
        if row.reason is not None:
            continue
        assert row.values is not None
        if not row.values.keys() >= required:
            absent = [c for c in contract.required if c not in row.values]
            _quarantine(row, Reason.MISSING_REQUIRED, f"{', '.join(absent)} absent from the row", quarantined)
            continue
        candidates.append(row)

    columns: dict[str, pa.Array] = {}
    first_bad: dict[int, BadValue] = {}
    raw_phones: list[str | None] = []
    for column in contract.columns:
        raw = [row.values.get(column.name) for row in candidates]  # type: ignore[union-attr]
        raw = [v if type(v) is str or v is None else _as_text(v) for v in raw]
        coerced = coerce_column(column, raw, latest)
        for i, bad in coerced.bad.items():
            first_bad.setdefault(i, bad)  # columns in contract order: the first bad one names the reason
        columns[column.name] = coerced.values
        if column.kind is Kind.PHONE:
            raw_phones = raw
    for i, bad in sorted(first_bad.items()):
        detail = f"{bad.column}: {bad.detail}" if bad.detail else bad.column
        _quarantine(candidates[i], bad.reason, detail, quarantined)
    typed = [i for i in range(len(candidates)) if i not in first_bad]
    kept_rows = [candidates[i] for i in typed]
    positions = pa.array(typed, pa.int64())
    columns = {name: values.take(positions) for name, values in columns.items()}

    vault: dict[str, str] = {}
    invalid_phones = 0
    phone_col = _phone_column(contract)
    if phone_col is not None:
        raw_kept = [raw_phones[i] for i in typed]
        invalid_phones = _tokenize_phones(columns, phone_col, raw_kept, id_key, vault)
    alive = np.ones(len(kept_rows), dtype=bool)
    if contract.phone_when is not None:
        _tokenize_phones_when(columns, contract, kept_rows, alive, id_key, vault, quarantined)
    hidden = int(_hide_phones(columns, contract, id_key)[alive].sum())
    if contract.id_of_type is not None:
        _check_id_forms(columns, contract, kept_rows, alive, quarantined)

    survivors = np.flatnonzero(alive)
    kept_rows = [kept_rows[i] for i in survivors]
    positions = pa.array(survivors, pa.int64())
    columns = {name: values.take(positions) for name, values in columns.items()}
    columns["local_date"] = (
        local_dates(columns[contract.date_column])
        if contract.date_column
        else (pa.array([day] * len(kept_rows), pa.date32()))
    )
    columns["_source_file"] = pa.array([r.source_file for r in kept_rows], pa.string())
    columns["_row_number"] = pa.array([r.row_number for r in kept_rows], pa.int64())
    schema = landed_schema(contract)
    table = pa.table(
        [columns[f.name] for f in schema if f.name != "_loaded_at"], schema=_without_loaded_at(schema)
    )
    keep = _drop_duplicates(table, kept_rows, contract, quarantined)
    return _Checked(table.filter(pa.array(keep, pa.bool_())), quarantined, vault, invalid_phones, hidden)


def _without_loaded_at(schema: pa.Schema) -> pa.Schema:
    return schema.remove(schema.get_field_index("_loaded_at"))


def _tokenize_phones(
    columns: dict[str, pa.Array], phone_col: str, raw: list[str | None], id_key: bytes, vault: dict[str, str]
) -> int:
    """Replace the plain phone column by ``phone_token`` and ``phone_masked`` (null when the value is not a
    mainland mobile number); return how many delivered values were not one."""
    tokens: list[str | None] = []
    masked: list[str | None] = []
    invalid = 0
    for value, delivered in zip(columns.pop(phone_col).to_pylist(), raw, strict=True):
        phone = normalize_phone(value)
        if phone is None:
            invalid += delivered not in (None, "")
            tokens.append(None)
            masked.append(None)
            continue
        token = phone_token(phone, id_key)
        tokens.append(token)
        masked.append(mask_phone(phone))
        vault[token] = phone
    columns["phone_token"] = pa.array(tokens, pa.string())
    columns["phone_masked"] = pa.array(masked, pa.string())
    return invalid


def _tokenize_phones_when(
    columns: dict[str, pa.Array],
    contract: TableContract,
    rows: list[RawRow],
    alive: np.ndarray,
    id_key: bytes,
    vault: dict[str, str],
    quarantined: list[RawRow],
) -> None:
    """Rows whose type column says their value is a phone (consent given by SMS reply): the value becomes
    its token and the type ``phone_token``; a value that is not a mainland mobile number is quarantined."""
    assert contract.phone_when is not None
    value_col, type_col, type_value = contract.phone_when
    values, types = columns[value_col].to_pylist(), columns[type_col].to_pylist()
    for i, kind in enumerate(types):
        if kind != type_value:
            continue
        phone = normalize_phone(values[i])
        if phone is None:
            _quarantine(rows[i], Reason.BAD_PHONE, f"{value_col}: not a mainland mobile number", quarantined)
            alive[i] = False
            continue
        token = phone_token(phone, id_key)
        types[i], values[i] = "phone_token", token
        vault[token] = phone
    columns[value_col], columns[type_col] = pa.array(values, pa.string()), pa.array(types, pa.string())


_ELEVEN_DIGITS = r"(?:[0-9][^0-9]*){11}"


def _hide_phones(columns: dict[str, pa.Array], contract: TableContract, id_key: bytes) -> np.ndarray:
    """Phones written outside the phone column: a code or identifier (TEXT) that is a phone becomes the
    phone's token, so it stays distinct and joinable; in free text (NOTE) every phone is masked. A code
    that only contains a phone-like run of digits (a buyer id of a platform prefix and 11 digits) is left
    alone. Returns how many were hidden, per row.

    Only values that could hold a phone are looked at in Python: those with a non-ASCII character (such as
    full-width digits), free text with 11 ASCII digits, codes with 11 ASCII digits and no ASCII letter."""
    rows = len(next(iter(columns.values()))) if columns else 0
    hidden = np.zeros(rows, dtype=np.int64)
    for column in contract.columns:
        if column.kind not in (Kind.TEXT, Kind.NOTE) or column.name not in columns:
            continue
        values = columns[column.name]
        digits = pc.match_substring_regex(values, _ELEVEN_DIGITS)
        if column.kind is Kind.TEXT:
            digits = pc.and_not(digits, pc.match_substring_regex(values, "[A-Za-z]"))  # never in a phone
        maybe = pc.or_(digits, pc.invert(pc.string_is_ascii(values)))
        positions = np.flatnonzero(pc.fill_null(maybe, False).to_numpy(zero_copy_only=False))
        if not len(positions):
            continue
        fixes: dict[int, str] = {}
        for i, value in zip(positions, values.take(pa.array(positions)).to_pylist(), strict=True):
            if column.kind is Kind.NOTE:
                text, found = replace_phones(value, mask_phone)
            else:
                phone = normalize_phone(value)
                text, found = (phone_token(phone, id_key), 1) if phone is not None else (value, 0)
            if found:
                fixes[int(i)], hidden[i] = text, hidden[i] + found
        columns[column.name] = patched(values, fixes)
    return hidden


def _check_id_forms(
    columns: dict[str, pa.Array],
    contract: TableContract,
    rows: list[RawRow],
    alive: np.ndarray,
    quarantined: list[RawRow],
) -> None:
    """An identifier must be written as One ID keys its type (ID_FORMS), or it could never match a member."""
    assert contract.id_of_type is not None
    value_col, type_col = contract.id_of_type
    values, types = columns[value_col].to_pylist(), columns[type_col].to_pylist()
    for i, kind in enumerate(types):
        form = ID_FORMS.get(str(kind))
        if alive[i] and form is not None and not form[0].fullmatch(str(values[i])):
            _quarantine(rows[i], Reason.BAD_ID, f"{value_col}: a {kind} is written {form[1]}", quarantined)
            alive[i] = False


def _drop_duplicates(
    table: pa.Table, rows: list[RawRow], contract: TableContract, quarantined: list[RawRow]
) -> list[bool]:
    """Within a partition, a key appears once: exact repeats keep their first row; a key whose rows
    disagree cannot be resolved here, so all of its rows are quarantined."""
    keys = [_hashable(table[c]) for c in contract.key]
    counts = Counter(zip(*keys, strict=True))
    keep = [True] * table.num_rows
    if not counts or max(counts.values()) == 1:
        return keep
    groups: dict[tuple, list[int]] = {}
    for index, key in enumerate(zip(*keys, strict=True)):
        if counts[key] > 1:
            groups.setdefault(key, []).append(index)
    payload_columns = [c for c in table.column_names if not c.startswith("_")]
    for indices in groups.values():
        records = table.select(payload_columns).take(pa.array(indices)).to_pylist()
        payloads = {tuple(r.values()) for r in records}
        first = rows[indices[0]]
        if len(payloads) == 1:
            dropped = indices[1:]
            reason, detail = Reason.DUPLICATE_ROW, f"repeats {first.source_file} row {first.row_number}"
        else:
            dropped = indices
            shown = ", ".join(f"{c}={_as_text(records[0][c])}" for c in contract.key)
            reason, detail = Reason.DUPLICATE_KEY_CONFLICT, f"{len(indices)} rows with {shown} disagree"
        for i in dropped:
            keep[i] = False
            _quarantine(rows[i], reason, detail, quarantined)
    return keep


def _hashable(values: pa.ChunkedArray) -> list:
    """A key column's values as cheap Python objects (times as their microseconds)."""
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
    return values.to_pylist()


# --- writing --------------------------------------------------------------------------------------------

QUARANTINE_SCHEMA = pa.schema(
    [
        ("channel", pa.string()),
        ("table", pa.string()),
        ("dt", pa.date32()),
        ("source_file", pa.string()),
        ("row_number", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
        ("_loaded_at", pa.timestamp("us", tz="UTC")),
    ]
)

VAULT_SCHEMA = pa.schema([("phone_token", pa.string()), ("phone_sealed", pa.string())])


def landed_schema(contract: TableContract) -> pa.Schema:
    fields: list[tuple[str, pa.DataType]] = []
    for column in contract.columns:
        if column.kind is Kind.PHONE:
            fields += [("phone_token", pa.string()), ("phone_masked", pa.string())]
        else:
            fields.append((column.name, ARROW_TYPES[column.kind]))
    fields += [
        ("local_date", pa.date32()),
        ("_source_file", pa.string()),
        ("_row_number", pa.int64()),
        ("_loaded_at", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema(fields)


# How each server target spells the landed columns' types (DuckDB reads the Parquet as it is). Spark has no
# zone-aware timestamp: its timestamp is an instant, as timestamptz is.
SQL_TYPES = {
    "postgres": {
        "string": "text",
        "integer": "bigint",
        "floating": "double precision",
        "boolean": "boolean",
        "date": "date",
        "timestamp": "timestamp",
        "timestamptz": "timestamptz",
        "decimal": "numeric({precision}, {scale})",
    },
    "spark": {
        "string": "string",
        "integer": "bigint",
        "floating": "double",
        "boolean": "boolean",
        "date": "date",
        "timestamp": "timestamp",
        "timestamptz": "timestamp",
        "decimal": "decimal({precision}, {scale})",
    },
}


def sql_type(arrow_type: pa.DataType, target: str) -> str:
    """The ``target``'s SQL type for a landed Arrow type (SQL_TYPES)."""
    spell = SQL_TYPES[target]
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return spell["string"]
    if pa.types.is_integer(arrow_type):
        return spell["integer"]
    if pa.types.is_floating(arrow_type):
        return spell["floating"]
    if pa.types.is_boolean(arrow_type):
        return spell["boolean"]
    if pa.types.is_date(arrow_type):
        return spell["date"]
    if pa.types.is_timestamp(arrow_type):
        return spell["timestamptz" if arrow_type.tz else "timestamp"]
    if pa.types.is_decimal(arrow_type):
        return spell["decimal"].format(precision=arrow_type.precision, scale=arrow_type.scale)
    raise TypeError(f"no {target} type for Arrow {arrow_type}")


def _replace_partition(target: Path, table: pa.Table) -> None:
    """Write ``target/part-0.parquet`` so that readers see the old partition or the new one, never a mix."""
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    pq.write_table(table, staging / "part-0.parquet", compression="zstd")
    _swap_into(staging, target)


def _swap_into(source: Path, target: Path) -> None:
    """Move the folder ``source`` to ``target`` by renames, retiring what was there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old.{uuid.uuid4().hex}")
        target.rename(retired)
    source.rename(target)
    if retired is not None:
        shutil.rmtree(retired)


def _remove_partition(target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)


def loaded_at_for(day: date) -> datetime:
    """The run's logical date: the start of the local day, in UTC."""
    return datetime.combine(day, time(), LOCAL_TZ).astimezone(UTC)


# --- one table, one day ---------------------------------------------------------------------------------


# How unlikely a partition's count of bad rows must be, for a table whose true error rate is at its limit,
# before the partition is refused: small partitions then do not trip the limit by chance (10 of 164 rows,
# 6.1 %, is ordinary at 5 %), large ones still do at a small excess.
CHANCE = 0.001


def allowed_bad_rows(rows: int, limit: float) -> int:
    """The most bad rows a partition of ``rows`` may hold: the (1 - CHANCE) quantile of the binomial count
    at the limit's rate."""
    if limit >= 1:
        return rows
    from scipy.stats import binom  # deferred on purpose: importing scipy.stats takes about 2 s

    return int(binom.ppf(1 - CHANCE, rows, limit))


def extract_table(
    settings: Settings,
    contract: TableContract,
    day: date,
    data_dir: Path | None = None,
    loaded_at: datetime | None = None,
) -> ExtractReport:
    """Stage one table's partition for ``day`` in the audit area (status ``staged``); raise on a missing
    partition or too many bad rows. ``publish_partition`` moves it into landing once the gate passed."""
    data_dir = Path(data_dir or settings.data_dir)
    loaded_at = (loaded_at or loaded_at_for(day)).astimezone(UTC)
    files, refused = list_partition_files(data_dir, contract, day)
    rows = [row for path in files for row in read_rows(path, data_dir, contract)]
    checked = check_rows(rows, contract, day, settings.id_key())

    report = ExtractReport(
        contract.channel,
        contract.table,
        day.isoformat(),
        files=[p.relative_to(data_dir).as_posix() for p in files],
        refused_files={p.relative_to(data_dir).as_posix(): reason for p, reason in refused.items()},
        source_files=_source_files(data_dir, [*files, *refused]),
        read=len(rows),
        landed=checked.landed.num_rows,
        quarantined=len(checked.quarantined),
        by_reason=dict(sorted(Counter(str(r.reason) for r in checked.quarantined).items())),
        invalid_phones=checked.invalid_phones,
        phones_hidden=checked.phones_hidden,
        limit=settings.quarantine_limit(contract.channel, contract.table),
    )
    assert report.read == report.landed + report.quarantined, "every row is landed or quarantined"

    quarantine_target = partition_dir(settings.quarantine_dir, contract.channel, contract.table, day)
    _replace_partition(quarantine_target, _quarantine_table(contract, day, checked.quarantined, loaded_at))
    report.quarantine_path = str(quarantine_target)

    staged_target = partition_dir(settings.audit_dir, contract.channel, contract.table, day)
    vault_target = partition_dir(settings.vault_dir, contract.channel, contract.table, day)
    where = f"{contract.name} {day.isoformat()}"
    refusal = _unreadable(rows, where) or _schema_drift(rows, contract, where)
    allowed = allowed_bad_rows(report.read, report.limit)
    if (
        refusal is None
        and report.quarantined > allowed
        and report.quarantined >= settings.quarantine_min_rows
    ):
        top = ", ".join(f"{reason} {count}" for reason, count in Counter(report.by_reason).most_common(3))
        refusal = QuarantineThresholdError(
            f"{where}: {report.quarantined} of {report.read} rows quarantined "
            f"({report.quarantined_share:.1%}) exceeds the limit of {report.limit:.1%} (at that rate, more "
            f"than {allowed} happens by chance once in {int(1 / CHANCE)}; {top}); inspect "
            f"{quarantine_target}; if this share is expected for the table, raise its limit "
            f"(MEMBERFLOW_QUARANTINE_LIMITS={contract.name}=0.1)"
        )
    if refusal is not None and not contract.all_or_nothing:
        report.message = f"{refusal}; the valid rows land all the same (this table is never held back)"
        log.warning(report.message)
        refusal = None
    if refusal is not None:
        _remove_partition(staged_target)
        report.status = "failed"
        report.message = f"{refusal}; nothing new was landed for this date"
    else:
        stamps = pa.array([loaded_at] * checked.landed.num_rows, ARROW_TYPES[Kind.TIME])
        _replace_partition(staged_target, checked.landed.append_column("_loaded_at", stamps))
        report.status = "staged"
        report.landed_path = str(staged_target)
        if _phone_column(contract) is not None or contract.phone_when is not None:
            vault = ContactVault(settings.vault_key())
            sealed = [
                {"phone_token": t, "phone_sealed": vault.seal(p)} for t, p in sorted(checked.vault.items())
            ]
            _replace_partition(vault_target, pa.Table.from_pylist(sealed, schema=VAULT_SCHEMA))
            report.vault_path = str(vault_target)
    _write_report(settings, report)
    for name, reason in report.refused_files.items():
        log.warning("%s %s: %s not read: %s", contract.name, report.date, name, reason)
    log.info(
        "%s %s: read=%d landed=%d quarantined=%d %s",
        contract.name,
        report.date,
        report.read,
        report.landed,
        report.quarantined,
        report.by_reason,
    )
    if refusal is not None:
        raise type(refusal)(report.message)
    return report


def _unreadable(rows: Sequence[RawRow], where: str) -> UnreadableFileError | None:
    """A file that could not be read at all (quarantined as its row 0): its rows are unknown."""
    files = [f"{r.source_file} ({r.detail})" for r in rows if r.row_number == 0 and r.reason is not None]
    if not files:
        return None
    return UnreadableFileError(
        f"{where}: unreadable file(s) {'; '.join(files)}: its rows are unknown; re-export or remove it"
    )


def _schema_drift(rows: Sequence[RawRow], contract: TableContract, where: str) -> SchemaDriftError | None:
    """A CSV or Parquet file (a header for every row) missing contract columns while carrying columns the
    contract does not know: most likely a renamed column, whose values would land as nulls. (JSON lines
    may leave out null fields, so only their unknown keys are ignored, not judged.)"""
    headers: dict[str, set[str]] = {}
    for row in rows:
        if row.values is not None and row.source_file not in headers:
            headers[row.source_file] = set(row.values)
    headers = {name: cols for name, cols in headers.items() if file_format(Path(name)) != "jsonl"}
    expected = set(contract.column_names)
    drifted = [
        f"{name}: no {', '.join(sorted(expected - cols))} but {', '.join(sorted(cols - expected))}"
        for name, cols in headers.items()
        if expected - cols and cols - expected
    ]
    if not drifted:
        return None
    return SchemaDriftError(
        f"{where}: columns changed ({'; '.join(drifted)}): a renamed column would land as nulls; rename it "
        "back in the export, or change the contract (memberflow/core/contracts.py)"
    )


def _quarantine_table(
    contract: TableContract, day: date, rows: list[RawRow], loaded_at: datetime
) -> pa.Table:
    ordered = sorted(rows, key=lambda r: (r.source_file, r.row_number))
    return pa.Table.from_pylist(
        [
            {
                "channel": contract.channel,
                "table": contract.table,
                "dt": day,
                "source_file": r.source_file,
                "row_number": r.row_number,
                "reason": str(r.reason),
                "detail": redact_phones(r.detail),
                "raw": redact_phones(r.raw),
                "_loaded_at": loaded_at,
            }
            for r in ordered
        ],
        schema=QUARANTINE_SCHEMA,
    )


def report_path(settings: Settings, channel: str, table: str, day: date) -> Path:
    return settings.reports_dir / "extract" / f"dt={day.isoformat()}" / f"{channel}.{table}.json"


def _write_report(settings: Settings, report: ExtractReport | dict) -> None:
    data = report.to_dict() if isinstance(report, ExtractReport) else report
    path = report_path(settings, data["channel"], data["table"], date.fromisoformat(data["date"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def read_report(settings: Settings, contract: TableContract, day: date) -> dict | None:
    path = report_path(settings, contract.channel, contract.table, day)
    return json.loads(path.read_text()) if path.exists() else None


# --- audit → publish ------------------------------------------------------------------------------------


def staged_partition(settings: Settings, contract: TableContract, day: date) -> Path:
    return partition_dir(settings.audit_dir, contract.channel, contract.table, day)


def publish_partition(settings: Settings, contract: TableContract, day: date, quality: str = "") -> Path:
    """Swap the audited partition into ``landing/`` (readers see the old or the new one, never a mix)."""
    staged = staged_partition(settings, contract, day)
    if not (staged / "part-0.parquet").exists():
        raise MissingPartitionError(f"{contract.name}: nothing staged for {day.isoformat()} under {staged}")
    target = partition_dir(settings.landing_dir, contract.channel, contract.table, day)
    _swap_into(staged, target)
    report = read_report(settings, contract, day) or {}
    report.update(status="ok", landed_path=str(target), quality=quality or report.get("quality", ""))
    _write_report(settings, report)
    return target


def reject_partition(settings: Settings, contract: TableContract, day: date, message: str) -> None:
    """The quality gate refused the staged partition: it stays in the audit area; landing is unchanged."""
    report = read_report(settings, contract, day) or {}
    report.update(status="rejected", quality="failed", message=message)
    _write_report(settings, report)


def read_landed(settings: Settings, channel: str, table: str) -> pa.Table:
    """All landed partitions of a table, in date order."""
    parts = sorted((settings.landing_dir / channel / table).glob("dt=*/part-0.parquet"))
    if not parts:
        return landed_schema(get_contract(channel, table)).empty_table()
    return pa.concat_tables([pq.read_table(p) for p in parts])


def _changed_since(report: dict, data_dir: Path, contract: TableContract, day: date) -> bool:
    """Whether the partition's files differ from those its report landed (reports from before the files
    were recorded count as unchanged)."""
    if "source_files" not in report:
        return False
    files, refused = list_partition_files(data_dir, contract, day)
    return _source_files(data_dir, [*files, *refused]) != report["source_files"]


def pending_partitions(
    settings: Settings,
    data_dir: Path,
    until: date | None = None,
    contracts: Sequence[TableContract] = CONTRACTS,
) -> list[tuple[date, TableContract]]:
    """Source partitions (up to ``until``) not published yet (never extracted, staged, failed or rejected),
    or published from other files than the partition holds now (a file added late, or changed)."""
    pending = []
    data_dir = require_data_dir(data_dir)
    for contract in contracts:
        for day in partition_days(data_dir / contract.channel / contract.table):
            if until is not None and day > until:
                continue
            path = report_path(settings, contract.channel, contract.table, day)
            report = json.loads(path.read_text()) if path.exists() else {}
            if report.get("status") != "ok" or _changed_since(report, data_dir, contract, day):
                pending.append((day, contract))
    return sorted(pending, key=lambda item: (item[0], item[1].name))
