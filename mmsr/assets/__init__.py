"""Files shipped inside the package: the tiny policy's warm-start checkpoint and the local
search's image engine.

``WARMSTART_TINY`` is a model folder (``mmsr.models.load_model`` reads it) made once by
``mmsr train sft`` with the command and seed in docs/warmstart.md; its resolved
config (``sft_config.json``) and measured metrics (``sft_metrics.json``) sit beside the weights.

``IMAGE_ENGINE`` is an image engine folder (``mmsr.search.local.engine``) made once by
``mmsr index train-engine`` on the offline world's page pictures (its command in docs/search.md);
``mmsr index build`` embeds a corpus's pictures with it unless told otherwise.
"""

from pathlib import Path

WARMSTART_TINY = Path(__file__).resolve().parent / "warmstart-tiny"
IMAGE_ENGINE = Path(__file__).resolve().parent / "image-engine"
