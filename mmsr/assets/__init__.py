"""Files shipped inside the package: the tiny policy's warm-start checkpoint.

``WARMSTART_TINY`` is a model folder (``mmsr.models.load_model`` reads it) made once by
``mmsr train sft`` with the command and seed in the README ("The warm start"); its resolved
config (``sft_config.json``) and measured metrics (``sft_metrics.json``) sit beside the weights.
"""

from pathlib import Path

WARMSTART_TINY = Path(__file__).resolve().parent / "warmstart-tiny"
