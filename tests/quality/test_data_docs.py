"""Data Docs: each run renders the pages of its own validations, and the index links only the newest."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

import expectations.runner as runner
from expectations.config import QualityConfig
from expectations.runner import Suite, build_data_docs, validate
from tests.support import make_settings


def test_each_run_renders_its_own_pages_and_the_index_links_the_newest(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "DOCS_VALIDATIONS", 2)  # read when the (new) workspace's context is made
    settings = make_settings(tmp_path / "ws", tmp_path / "data")
    docs = settings.quality_dir / "docs"
    for i in range(3):  # three daily landing runs
        day = date(2026, 3, 1) + timedelta(days=i)
        suite = Suite("landing", "wecom.contacts", QualityConfig.load())
        suite.add_row_count_band("volume", 3, "the reference")
        validate(settings, suite, day, pd.DataFrame({"n": [1, 2, 3]}))
        build_data_docs(settings, "landing", [day])
        pages = [p.relative_to(docs) for p in docs.rglob("*.html") if p.name != "index.html"]
        validation_pages = [p for p in pages if "validations" in p.parts]
        assert len(validation_pages) == i + 1
        assert any(f"landing-{day.isoformat()}" in p.parts for p in validation_pages)

    index = (docs / "index.html").read_text()
    assert "landing-2026-03-03" in index and "landing-2026-03-02" in index
    assert "landing-2026-03-01" not in index  # its page stays on disk, no longer linked
