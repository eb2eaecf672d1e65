"""The identity audit: how One ID clustered the identifiers, what the guards dropped, and — when the data
folder carries ground truth (``_truth/identifiers.parquet``) — pairwise precision and recall."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from memberflow.core.settings import Settings

OVERSIZE = 20  # identifiers in one member worth a look


@dataclass
class TruthScore:
    identifiers_scored: int
    predicted_pairs: int
    true_pairs_linkable: int
    correct_pairs: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs_linkable if self.true_pairs_linkable else 1.0


@dataclass
class IdentityReport:
    members: int
    identifiers: int
    cluster_sizes: dict[str, int]
    oversize: list[tuple[str, int]]
    singletons_by_channel: dict[str, int]
    dropped_by_reason: dict[str, int]
    candidate_links: int
    merges: int
    truth: TruthScore | None = None
    notes: list[str] = field(default_factory=list)


def _pairs(counts: pl.Series) -> int:
    values = counts.cast(pl.Int64).to_numpy()
    return int((values * (values - 1) // 2).sum())


def score_against_truth(assigned: pl.DataFrame, evidence: pl.DataFrame, truth: pl.DataFrame) -> TruthScore:
    """Pairwise precision and recall of merged identifier pairs.

    Recall counts only the same-person pairs that strong evidence can link at all: pairs connected by
    evidence edges whose two ends belong to that person.
    """
    scored = assigned.join(truth, on=["id_type", "id_value"], how="inner")
    predicted = _pairs(scored.group_by("member_id").len()["len"])
    correct = _pairs(scored.group_by("member_id", "person_id").len()["len"])

    keys = truth.with_columns(node=pl.int_range(pl.len()))
    ends = (
        evidence.join(keys, left_on=["id_type_a", "id_value_a"], right_on=["id_type", "id_value"])
        .join(keys, left_on=["id_type_b", "id_value_b"], right_on=["id_type", "id_value"], suffix="_b")
        .filter(pl.col("person_id") == pl.col("person_id_b"))
    )
    n = keys.height
    graph = coo_matrix(
        (np.ones(ends.height), (ends["node"].to_numpy(), ends["node_b"].to_numpy())), shape=(n, n)
    )
    _, labels = connected_components(graph, directed=False)
    linkable = _pairs(pl.Series(np.bincount(labels)))
    return TruthScore(scored.height, predicted, linkable, correct)


def identity_report(settings: Settings, data_dir: Path | None = None) -> IdentityReport:
    if not settings.warehouse_path.exists():
        raise FileNotFoundError(f"no warehouse at {settings.warehouse_path}: run `memberflow build` first")
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assigned = con.sql("select member_id, id_type, id_value, first_channel from member_identifiers").pl()
        dropped = con.sql("select drop_reason, count(*) as n from identity_dropped_edges group by all").pl()
        candidates = con.sql("select count(*) from identity_candidate_links").fetchall()[0][0]
        merges = con.sql("select count(*) from member_id_history").fetchall()[0][0]
        evidence = con.sql(
            "select id_type_a, id_value_a, id_type_b, id_value_b from int_identity_evidence "
            "where strength = 'strong'"
        ).pl()
    sizes = assigned.group_by("member_id").len()
    bins = {"1": (1, 1), "2": (2, 2), "3-4": (3, 4), "5-9": (5, 9), "10-19": (10, 19), "20+": (20, 10**9)}
    distribution = {
        label: sizes.filter(pl.col("len").is_between(lo, hi)).height for label, (lo, hi) in bins.items()
    }
    oversize = sizes.filter(pl.col("len") >= OVERSIZE).sort("len", descending=True).head(10).rows()
    singles = sizes.filter(pl.col("len") == 1).join(assigned, on="member_id")
    singletons = dict(sorted(singles.group_by("first_channel").len().rows()))
    report = IdentityReport(
        members=sizes.height,
        identifiers=assigned.height,
        cluster_sizes=distribution,
        oversize=[(m, int(n)) for m, n in oversize],
        singletons_by_channel=singletons,
        dropped_by_reason=dict(sorted((r, int(n)) for r, n in dropped.rows())),
        candidate_links=int(candidates),
        merges=int(merges),
    )
    truth_file = Path(data_dir or settings.data_dir) / "_truth" / "identifiers.parquet"
    if truth_file.exists():
        report.truth = score_against_truth(assigned, evidence, pl.read_parquet(truth_file))
    else:
        report.notes.append(f"no ground truth at {truth_file}: precision and recall not computed")
    return report
