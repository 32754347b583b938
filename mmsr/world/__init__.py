"""The offline world: a small, real "mini web" built from packaged data.

Entities (Wikipedia summaries joined with emoji and country facts), their web pages and
Twemoji images (the corpus a search index reads), query images drawn in another style, and
FVQA-schema question sets split into search-free (head) and search-required (tail). Build it
with ``mmsr world build`` or :func:`mmsr.world.build.build_world`. No torch here; importing
this package is cheap (the builder's modules load Pillow and pyarrow when imported).
"""
