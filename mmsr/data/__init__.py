"""Datasets: the ``Sample`` record, loaders for FVQA / the world / the paper's benchmarks,
export to veRL parquet, search balancing and question generation.

No torch here. ``mmsr.data.qagen`` (question generation over an HTTP chat API) and
``mmsr.data.outcomes`` (a policy's rollouts for balancing) are imported on their own so that
loading data pulls in neither the HTTP client nor the rollout engine.

>>> from mmsr.data import load_samples                       # doctest: +SKIP
>>> samples = load_samples("train.parquet", skip_bad=True)   # doctest: +SKIP
"""

from mmsr.data.balance import (
    DEFAULT_RATIO,
    BalanceResult,
    Label,
    RolloutOutcome,
    balance,
    label_outcomes,
    load_outcomes,
    sample_to_ratio,
)
from mmsr.data.export import verl_record, write_verl_parquet
from mmsr.data.formats import FORMATS, DataFormat, detect_format
from mmsr.data.images import open_image, sample_image
from mmsr.data.loaders import iter_samples, load_samples
from mmsr.data.schema import DataError, FieldError, LoadStats
from mmsr.types import Sample

__all__ = [
    "DEFAULT_RATIO",
    "FORMATS",
    "BalanceResult",
    "DataError",
    "DataFormat",
    "FieldError",
    "Label",
    "LoadStats",
    "RolloutOutcome",
    "Sample",
    "balance",
    "detect_format",
    "iter_samples",
    "label_outcomes",
    "load_outcomes",
    "load_samples",
    "open_image",
    "sample_image",
    "sample_to_ratio",
    "verl_record",
    "write_verl_parquet",
]
