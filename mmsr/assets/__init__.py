"""Files shipped inside the package: the tiny policy's warm-start checkpoint and the local
search's image engine.

``WARMSTART_TINY`` is a model folder (``mmsr.models.load_model`` reads it), the output of
``mmsr train warmstart --recipe warmstart-tiny`` (docs/warmstart.md): the recipe
(``recipe.toml``), its report (``recipe_report.json``), the world it was trained for
(``world.json``) and the last stage's config and metrics sit beside the weights.

``IMAGE_ENGINE`` is an image engine folder (``mmsr.search.local.engine``) made once by
``mmsr index train-engine`` on the offline world's page pictures (its command in docs/search.md);
``mmsr index build`` embeds a corpus's pictures with it unless told otherwise.
"""

from pathlib import Path

WARMSTART_TINY = Path(__file__).resolve().parent / "warmstart-tiny"
IMAGE_ENGINE = Path(__file__).resolve().parent / "image-engine"
