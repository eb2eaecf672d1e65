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

import pyarrow as pa
import pyarrow.parquet as pq

from memberflow.core.contracts import (
    CONTRACTS,
    ID_FORMS,
    LOCAL_TZ,
    BadValue,
    Kind,
    Reason,
    TableContract,
    coerce_value,
    get_contract,
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
    values: dict[str, str | None] | None = None
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
        elif fields is not None and (not fields or (len(fields) == 1 and not fields[0].strip())):
            continue  # a blank line is not a row
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


def _read_jsonl(payload: bytes, relative: str) -> Iterator[RawRow]:
    for number, line in enumerate(payload.splitlines(keepends=True), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_ROW_BYTES:
            yield _oversize(relative, number, line)
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield _undecodable(relative, number, line)
            continue
        raw = text.rstrip("\r\n")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRow(
                relative, number, raw, reason=Reason.MALFORMED_ROW, detail=f"invalid JSON: {exc.msg}"
            )
            continue
        if not isinstance(obj, dict):
            yield RawRow(relative, number, raw, reason=Reason.MALFORMED_ROW, detail="not a JSON object")
            continue
        yield RawRow(relative, number, raw, values={str(k): _as_text(v) for k, v in obj.items()})


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
    landed: list[dict]
    quarantined: list[RawRow]
    vault: dict[str, str]  # phone_token -> plain phone
    invalid_phones: int
    phones_hidden: int = 0


def _hide_phones(record: dict, contract: TableContract, id_key: bytes) -> int:
    """Phones written outside the phone column: a code or identifier (TEXT) that is a phone becomes the
    phone's token, so it stays distinct and joinable; in free text (NOTE) every phone is masked. A code
    that only contains a phone-like run of digits (a buyer id of a platform prefix and 11 digits) is left
    alone. Returns how many were hidden."""
    hidden = 0
    for column in contract.columns:
        value = record.get(column.name)
        if not isinstance(value, str):
            continue
        if column.kind is Kind.NOTE:
            record[column.name], found = replace_phones(value, mask_phone)
            hidden += found
        elif column.kind is Kind.TEXT and (phone := normalize_phone(value)) is not None:
            record[column.name] = phone_token(phone, id_key)
            hidden += 1
    return hidden


def _phone_column(contract: TableContract) -> str | None:
    phones = [c.name for c in contract.columns if c.kind is Kind.PHONE]
    assert len(phones) <= 1, f"{contract.name}: one plain phone column per table is supported"
    return phones[0] if phones else None


def check_rows(rows: Sequence[RawRow], contract: TableContract, day: date, id_key: bytes) -> _Checked:
    """Coerce every row; return typed rows to land and rows to quarantine (with reason and detail)."""
    latest = datetime.combine(day + timedelta(days=1), time(), LOCAL_TZ).astimezone(UTC)
    phone_col = _phone_column(contract)
    landed: list[dict] = []
    origin: list[RawRow] = []
    quarantined: list[RawRow] = []
    vault: dict[str, str] = {}
    invalid_phones = hidden = 0
    for row in rows:
        if row.reason is not None:
            quarantined.append(row)
            continue
        assert row.values is not None
        absent = [c for c in contract.required if c not in row.values]
        if absent:
            row.reason, row.detail = Reason.MISSING_REQUIRED, f"{', '.join(absent)} absent from the row"
            quarantined.append(row)
            continue
        record: dict[str, object] = {}
        try:
            for column in contract.columns:
                record[column.name] = coerce_value(column, row.values.get(column.name), latest)
        except BadValue as bad:
            row.reason, row.detail = bad.reason, f"{bad.column}: {bad.detail}" if bad.detail else bad.column
            quarantined.append(row)
            continue
        if phone_col is not None:
            phone = normalize_phone(record.pop(phone_col))
            if phone is None:
                invalid_phones += row.values.get(phone_col) not in (None, "")
                record["phone_token"] = record["phone_masked"] = None
            else:
                token = phone_token(phone, id_key)
                record["phone_token"], record["phone_masked"] = token, mask_phone(phone)
                vault[token] = phone
        if contract.phone_when is not None:
            value_col, type_col, type_value = contract.phone_when
            if record[type_col] == type_value:
                phone = normalize_phone(record[value_col])
                if phone is None:
                    row.reason, row.detail = Reason.BAD_PHONE, f"{value_col}: not a mainland mobile number"
                    quarantined.append(row)
                    continue
                token = phone_token(phone, id_key)
                record[type_col], record[value_col] = "phone_token", token
                vault[token] = phone
        hidden += _hide_phones(record, contract, id_key)
        if contract.id_of_type is not None:
            value_col, type_col = contract.id_of_type
            form = ID_FORMS.get(str(record[type_col]))
            if form is not None and not form[0].fullmatch(str(record[value_col])):
                row.reason, row.detail = (
                    Reason.BAD_ID,
                    f"{value_col}: a {record[type_col]} is written {form[1]}",
                )
                quarantined.append(row)
                continue
        record["local_date"] = (
            record[contract.date_column].astimezone(LOCAL_TZ).date() if contract.date_column else day
        )
        record["_source_file"], record["_row_number"] = row.source_file, row.row_number
        landed.append(record)
        origin.append(row)
    keep = _drop_duplicates(landed, origin, contract, quarantined)
    kept = [r for r, k in zip(landed, keep, strict=True) if k]
    return _Checked(kept, quarantined, vault, invalid_phones, hidden)


def _drop_duplicates(
    records: list[dict], origin: list[RawRow], contract: TableContract, quarantined: list[RawRow]
) -> list[bool]:
    """Within a partition, a key appears once: exact repeats keep their first row; a key whose rows
    disagree cannot be resolved here, so all of its rows are quarantined."""
    payload_columns = [c for c in records[0] if not c.startswith("_")] if records else []
    groups: dict[tuple, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(tuple(record[c] for c in contract.key), []).append(index)
    keep = [True] * len(records)
    for key, indices in groups.items():
        if len(indices) == 1:
            continue
        payloads = {tuple(records[i][c] for c in payload_columns) for i in indices}
        first = origin[indices[0]]
        if len(payloads) == 1:
            dropped = indices[1:]
            reason, detail = Reason.DUPLICATE_ROW, f"repeats {first.source_file} row {first.row_number}"
        else:
            dropped = indices
            shown = ", ".join(f"{c}={_as_text(v)}" for c, v in zip(contract.key, key, strict=True))
            reason, detail = Reason.DUPLICATE_KEY_CONFLICT, f"{len(indices)} rows with {shown} disagree"
        for i in dropped:
            keep[i] = False
            origin[i].reason, origin[i].detail = reason, detail
            quarantined.append(origin[i])
    return keep


# --- writing --------------------------------------------------------------------------------------------

_ARROW_TYPES = {
    Kind.TEXT: pa.string(),
    Kind.NOTE: pa.string(),
    Kind.ENUM: pa.string(),
    Kind.TOKEN: pa.string(),
    Kind.TIME: pa.timestamp("us", tz="UTC"),
    Kind.DATE: pa.date32(),
    Kind.AMOUNT: pa.decimal128(14, 2),
    Kind.QTY: pa.int64(),
    Kind.COUNT: pa.int64(),
    Kind.BOOL: pa.bool_(),
}

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
            fields.append((column.name, _ARROW_TYPES[column.kind]))
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
        landed=len(checked.landed),
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
        for record in checked.landed:
            record["_loaded_at"] = loaded_at
        _replace_partition(
            staged_target, pa.Table.from_pylist(checked.landed, schema=landed_schema(contract))
        )
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
        if (
            row.values is not None
            and row.source_file not in headers
            and file_format(Path(row.source_file)) != "jsonl"
        ):
            headers[row.source_file] = set(row.values)
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
