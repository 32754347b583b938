"""``iter_samples`` / ``load_samples``: any supported file → validated ``Sample`` records.

The loader streams raw rows from the file, converts each with its format's converter and
checks its image. Policy on bad input:

* a malformed row raises ``DataError`` naming the file, the row and the field — or, with
  ``skip_bad=True``, is skipped, logged and counted;
* a corrupt image (bytes Pillow cannot open) never fails a load: the sample is **kept with
  ``image=None``** (its ``image_path`` kept), counted in ``LoadStats.bad_images`` and logged;
* an image file that is named but absent leaves ``image=None`` and is counted as missing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

from mmsr.data.formats import Converter, detect_format, get_format, rows_of
from mmsr.data.images import LoadContext, image_problem
from mmsr.data.readers import RawRow
from mmsr.data.schema import DataError, FieldError, LoadStats
from mmsr.types import Sample

logger = logging.getLogger(__name__)

_WARN_LIMIT = 5  # individual warnings per load; the rest go to the summary only


def _checked_image(sample: Sample, where: str, stats: LoadStats) -> Sample:
    if sample.image is None:
        if sample.image_path is not None:
            stats.missing_images += 1
        return sample
    problem = image_problem(sample.image)
    if problem is None:
        return sample
    stats.bad_images += 1
    if stats.bad_images <= _WARN_LIMIT:
        logger.warning("%s: corrupt image dropped (%s)", where, problem)
    return dataclasses.replace(sample, image=None)


def iter_samples(
    path: Path | str,
    *,
    format: str | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    image_dir: Path | str | None = None,
    check_images: bool = True,
    stats: LoadStats | None = None,
) -> Iterator[Sample]:
    """Stream the samples of ``path`` (see the module docstring for the error policy).

    ``format`` is a key of ``mmsr.data.FORMATS`` (detected when ``None``); ``image_dir`` is
    where relative image names point (default: the file's folder); ``stats`` is filled in.
    """
    path = Path(path)
    stats = stats if stats is not None else LoadStats()
    convert = get_format(format or detect_format(path)).convert
    folder = Path(image_dir) if image_dir is not None else None
    if limit is not None and limit <= 0:
        return
    produced = 0
    for raw in rows_of(path):
        stats.rows += 1
        try:
            samples = _convert(convert, raw, LoadContext(path, raw.index, folder))
        except DataError as err:
            if not skip_bad:
                raise
            stats.skipped += 1
            if stats.skipped <= _WARN_LIMIT:
                logger.warning("skipped %s", err)
            continue
        for sample in samples:
            if check_images:
                sample = _checked_image(sample, f"{path}: row {raw.index}", stats)
            elif sample.image is None and sample.image_path is not None:
                stats.missing_images += 1
            stats.samples += 1
            produced += 1
            yield sample
            if limit is not None and produced >= limit:
                return


def _convert(convert: Converter, raw: RawRow, ctx: LoadContext) -> list[Sample]:
    """``convert(raw.record)``, with every failure as a ``DataError`` naming file and row.

    Values of an unexpected shape can surface as ``TypeError`` & co. deep in a converter;
    they are bad data too, reported with the row (the original error stays chained).
    """
    if raw.record is None:
        raise DataError(ctx.path, raw.index, "<row>", raw.error or "unreadable")
    try:
        return convert(raw.record, ctx)
    except FieldError as err:
        raise DataError(ctx.path, raw.index, err.field, err.message) from None
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        message = f"unexpected value ({type(err).__name__}: {err})"
        raise DataError(ctx.path, raw.index, None, message) from err


def load_samples(
    path: Path | str,
    *,
    format: str | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    image_dir: Path | str | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """All samples of ``path`` as a list; logs a one-line summary (rows, skipped, images)."""
    stats = LoadStats()
    samples = list(
        iter_samples(
            path,
            format=format,
            skip_bad=skip_bad,
            limit=limit,
            image_dir=image_dir,
            check_images=check_images,
            stats=stats,
        )
    )
    level = logging.WARNING if stats.skipped or stats.bad_images else logging.INFO
    logger.log(level, "%s: %s", path, stats.summary())
    return samples
