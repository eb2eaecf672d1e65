"""Segment exports as CSV, streamed batch by batch from a spooled Parquet file.

Masked (every role): the member's masked phone, no raw identifier. Unmasked (admin only, audited): the
plain phone, decrypted from the contact vault batch by batch into the response and nowhere else, plus the
raw unionid and WeCom external_userid. Besides the SMS connector this is the only code that opens the vault.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq

from memberflow.core.settings import Settings
from memberflow.core.vault import ContactVault, VaultError
from memberflow.core.vocab import MODELS
from memberflow.outreach.run import pick_reasons

BASE_COLUMNS = [
    "member_id", "as_of", "segment", "channel", "status", "reason", "phone",
    "staff_owner", "lifecycle_stage", "funnel_stage", "value_tier", "tags",
]  # fmt: skip
UNMASKED_COLUMNS = ["unionid", "external_userid"]


def columns(unmasked: bool) -> list[str]:
    scores = [f"{m}_{part}" for m in MODELS for part in ("probability", "decile")]
    return [
        *BASE_COLUMNS[:7],
        *(UNMASKED_COLUMNS if unmasked else []),
        *BASE_COLUMNS[7:],
        *scores,
        "reasons",
        "delivery_status",
    ]


def stream_csv(
    settings: Settings,
    spool: Path,
    unmasked: bool,
    reasons_model: str | None,
    on_done: Callable[[int, bool], None],
) -> Iterator[bytes]:
    """Yield the CSV (UTF-8 with a BOM, so spreadsheet apps read Chinese text right) and remove the spool.

    ``on_done(rows, completed)`` runs once at the end, also when the client went away mid-download."""
    vault = None
    if unmasked:
        vault = ContactVault(settings.vault_key())
    header = columns(unmasked)
    rows = 0
    completed = False
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    try:
        writer.writerow(header)
        yield ("\ufeff" + _take(buffer)).encode("utf-8")
        parquet = pq.ParquetFile(spool)
        for batch in parquet.iter_batches(batch_size=2_000):
            for record in batch.to_pylist():
                writer.writerow(_row(record, unmasked, vault, reasons_model))
                rows += 1
            yield _take(buffer).encode("utf-8")
        completed = True
    finally:
        spool.unlink(missing_ok=True)
        on_done(rows, completed)


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _row(record: dict, unmasked: bool, vault, reasons_model: str | None) -> list:
    scores = {}
    for m in MODELS:
        raw = record.get(f"score_{m}")
        scores[m] = json.loads(raw) if raw else {}
    phone = record.get("phone_masked") or ""
    if unmasked:
        sealed = record.get("phone_sealed")
        try:
            phone = vault.open(sealed) if sealed else ""
        except VaultError:
            phone = ""
    reasons = pick_reasons({m: scores[m].get("r") for m in MODELS}, reasons_model)
    out = [record.get(c) for c in BASE_COLUMNS[:6]]
    out.append(phone)
    if unmasked:
        out += [record.get("unionid") or "", record.get("external_userid") or ""]
    out += [record.get(c) for c in BASE_COLUMNS[7:11]]
    out.append("; ".join(record.get("tags") or []))
    for m in MODELS:
        p = scores[m].get("p")
        out += ["" if p is None else f"{p:.4f}", scores[m].get("d", "")]
    out.append(" · ".join(reasons))
    out.append(record.get("delivery_status") or "")
    return ["" if v is None else v for v in out]
