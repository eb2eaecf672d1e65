"""Great Expectations, imported without its optional Spark support.

GX imports pyspark whenever it is installed (for its Spark data source, which memberflow does not use: the
gates validate pandas frames). pyspark is installed for the Spark warehouse target, and importing it costs
every process that validates about a second (pyspark.ml among it) and a warning about pandas. ``load``
imports GX with pyspark hidden, so GX records it as not installed; pyspark itself stays importable.

GX also fingerprints every pandas batch under 1 GB by hashing all of its values, only to label the batch in
the result's metadata (the four marts at 1M members: 5.5 s of a 35 s gate). The gates name their batches
themselves, so ``load`` turns the fingerprint off.
"""

from __future__ import annotations

import sys
from types import ModuleType


def load() -> ModuleType:
    """The ``great_expectations`` module (imported once, the first time, without pyspark)."""
    if "great_expectations" not in sys.modules and "pyspark" not in sys.modules:
        sys.modules["pyspark"] = None  # type: ignore[assignment]  # "import pyspark" raises ImportError
        try:
            import great_expectations
        finally:
            del sys.modules["pyspark"]
    import great_expectations
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0  # no batch is small enough to be fingerprinted
    return great_expectations
