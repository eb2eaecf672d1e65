"""Key rotation: a new id key re-tokenizes every phone from the contact vault; a new vault key re-seals it.

Every plain phone the workspace ever landed is in the vault, so the vault gives, for each phone, its token
under the old id key and under the new one. ``rotate_keys`` replaces old tokens by new ones wherever
memberflow keeps them outside the warehouse: landed, staged and quarantined partitions, the vault itself,
the identity snapshot and the delivery ledger (its per-number SMS caps). The warehouse is derived: its
marts gate is unpublished (scoring and delivery wait), and the next build (``memberflow build``, or the
transform DAG) rebuilds it. Scores are kept: they are by member id, which does not change.

Member ids do not change. A member's id comes from its founding identifier, often a phone token; the
rotation records each phone's founding token (``identity/token_aliases.parquet``) and the identity replay
reads phones by it (``memberflow.identity.resolve_aliased``).

Tokens that no phone in the vault explains stay as they are and are counted: tokens a partner made with the
old key (the insurance feed) for phones memberflow never saw. The partner must switch keys with you.

Safe to run again after an interruption: the new key is kept (``<secrets>/<key>.next``) until the end,
replacing a token is a no-op on a file already rewritten, and a vault entry opens with either key. Runs
with the landing, delivery and warehouse locks held, so no pipeline step sees half a rotation.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberflow.core.phones import phone_token
from memberflow.core.settings import ConfigError, Settings, create_once, new_key_text, vault_key_bytes
from memberflow.core.vault import ContactVault, VaultError, partition_files
from memberflow.identity import ALIASES_FILE
from memberflow.outreach.ledger import ledger_path
from memberflow.outreach.run import delivery_lock
from memberflow.warehouse import clear_published, landing_lock, warehouse_lock

NEW_KEY_VARIABLES = {"id_key": "MEMBERFLOW_NEW_ID_KEY", "vault_key": "MEMBERFLOW_NEW_VAULT_KEY"}
KEY_VARIABLES = {"id_key": "MEMBERFLOW_ID_KEY", "vault_key": "MEMBERFLOW_VAULT_KEY"}
_TOKEN = re.compile(r"[0-9a-f]{64}")


@dataclass
class RotationReport:
    rotated: list[str]
    phones: int = 0  # phones in the vault
    files_rewritten: int = 0
    values_replaced: int = 0
    ledger_rows: int = 0
    vault_entries_resealed: int = 0
    # landed tokens no vault phone explains (made by a partner with the old key): left as they were
    unexplained_tokens: int = 0
    set_variables: list[str] = field(default_factory=list)  # keys the deployment passes: set these now


def rotate_keys(
    settings: Settings, names: list[str], environ: dict[str, str] | None = None
) -> RotationReport:
    """Rotate the keys ``names`` (``id_key``, ``vault_key``). A key kept in the secrets folder is replaced by
    a new random one; a key the environment passes needs its successor in MEMBERFLOW_NEW_ID_KEY /
    MEMBERFLOW_NEW_VAULT_KEY, and the deployment then sets the usual variable to it."""
    env = os.environ if environ is None else environ
    report = RotationReport(sorted(names))
    with (
        landing_lock(settings, "memberflow keys rotate"),
        delivery_lock(settings),
        warehouse_lock(settings),
    ):
        old_id, old_vault = settings.id_key(), settings.vault_key()  # both must match the workspace
        new = {name: _next_key(settings, name, env) for name in names}
        settings.own_secrets_folder()  # a copy of this workspace keeps the keys it has
        new_vault = (
            vault_key_bytes(new["vault_key"], NEW_KEY_VARIABLES["vault_key"]) if "vault_key" in new else None
        )
        openers = [ContactVault(old_vault), *([ContactVault(new_vault)] if new_vault else [])]
        phones = sorted({phone for _, phone in _vault_entries(settings, openers)})
        report.phones = len(phones)
        if "id_key" in new:
            new_id = new["id_key"].encode("utf-8")
            mapping = {phone_token(p, old_id): phone_token(p, new_id) for p in phones}
            _add_aliases(settings.home / "identity" / ALIASES_FILE, mapping)
            _retokenize(settings, mapping, report)
        if new_vault is not None:
            report.vault_entries_resealed = _reseal(settings, openers, ContactVault(new_vault))
        for name, text in new.items():
            settings.install_key(name, text)
            if settings.key_in_environment(name):
                report.set_variables.append(KEY_VARIABLES[name])
            (settings.secrets_dir / f"{name}.next").unlink(missing_ok=True)
        # the warehouse still holds the old tokens until rebuilt: nothing scores or delivers on them
        clear_published(settings, "marts")
    return report


def _next_key(settings: Settings, name: str, env) -> str:
    """The key that replaces ``name``: from MEMBERFLOW_NEW_*, else (for a key kept in the secrets folder) a
    new random one, kept in ``<name>.next`` until the rotation is done so a rerun uses the same one."""
    given = env.get(NEW_KEY_VARIABLES[name]) or None
    if given is None and settings.key_in_environment(name):
        raise ConfigError(
            f"{KEY_VARIABLES[name]} comes from the environment: set {NEW_KEY_VARIABLES[name]} to the new key "
            f"(generate one with `memberflow keys new`), rotate, then set {KEY_VARIABLES[name]} to it"
        )
    if given is None:
        given = create_once(settings.secrets_dir / f"{name}.next", lambda: new_key_text(name), private=True)
    if name == "vault_key":
        vault_key_bytes(given, NEW_KEY_VARIABLES[name])
    return given


def _vault_entries(settings: Settings, openers: list[ContactVault]) -> Iterator[tuple[str, str]]:
    """(sealed, phone) of every vault entry, opened with whichever key sealed it."""
    for path in partition_files(settings.vault_dir):
        for sealed in pq.read_table(path, columns=["phone_sealed"])["phone_sealed"].to_pylist():
            yield sealed, _open(openers, sealed)


def _open(openers: list[ContactVault], sealed: str) -> str:
    for vault in openers:
        try:
            return vault.open(sealed)
        except VaultError:
            continue
    raise VaultError("a vault entry opens with neither the current nor the new vault key")


def _add_aliases(path: Path, mapping: dict[str, str]) -> None:
    """Record, for each phone's new token, the token it was founded with (the old one's founding token)."""
    known: dict[str, str] = {}
    if path.exists():
        table = pq.read_table(path)
        known = dict(zip(table["current"].to_pylist(), table["founding"].to_pylist(), strict=True))
    rows = {**known, **{new: known.get(old, old) for old, new in mapping.items()}}
    table = pa.table({"current": list(rows), "founding": list(rows.values())})
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def _retokenize(settings: Settings, mapping: dict[str, str], report: RotationReport) -> None:
    old = pa.array(list(mapping), pa.string())
    new = pa.array(list(mapping.values()), pa.string())
    known = set(mapping) | set(mapping.values())
    unexplained: set[str] = set()
    folders = [settings.landing_dir, settings.audit_dir, settings.quarantine_dir, settings.vault_dir]
    files = [f for folder in folders for f in sorted(folder.rglob("*.parquet"))]
    files += [f for f in (settings.home / "identity").glob("*.parquet") if f.name != ALIASES_FILE]
    for path in files:
        table = pq.read_table(path)
        replaced = 0
        columns = []
        for column in table.columns:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                where = pc.index_in(column, value_set=old)
                replaced += pc.sum(pc.is_valid(where)).as_py() or 0
                if path.is_relative_to(settings.landing_dir):
                    values = pc.unique(column).to_pylist()
                    unexplained |= {v for v in values if v and _TOKEN.fullmatch(v) and v not in known}
                column = pc.if_else(pc.is_valid(where), pc.take(new, where), column).cast(column.type)
            columns.append(column)
        if replaced:
            rewritten = pa.Table.from_arrays(columns, schema=table.schema)
            _write_atomically(path, lambda tmp, t=rewritten: pq.write_table(t, tmp))
            report.files_rewritten += 1
            report.values_replaced += replaced
    report.unexplained_tokens = len(unexplained)
    ledger = ledger_path(settings)
    if ledger.exists():
        with contextlib.closing(sqlite3.connect(ledger, timeout=60)) as con, con:
            con.execute("create temp table token_map (old text primary key, new text)")
            con.executemany("insert into token_map values (?, ?)", mapping.items())
            report.ledger_rows = con.execute(
                "update deliveries set phone_token = (select new from token_map where old = phone_token) "
                "where phone_token in (select old from token_map)"
            ).rowcount


def _reseal(settings: Settings, openers: list[ContactVault], vault: ContactVault) -> int:
    count = 0
    for path in partition_files(settings.vault_dir):
        table = pq.read_table(path)
        sealed = [vault.seal(_open(openers, s)) for s in table["phone_sealed"].to_pylist()]
        column = table.schema.get_field_index("phone_sealed")
        rewritten = table.set_column(column, table.schema.field(column), pa.array(sealed, pa.string()))
        _write_atomically(path, lambda tmp, t=rewritten: pq.write_table(t, tmp))
        count += len(sealed)
    return count


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    write(tmp)
    tmp.replace(path)
