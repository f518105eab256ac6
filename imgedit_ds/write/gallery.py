"""`gallery.html`: a static page to browse a run's rows — before and after, side by side.

Each row shows its source image(s) and edited image with the instruction, category, status, error and
any extra scalar column (judge scores, once judging exists). Two selects filter by status and by
category with a few lines of plain JavaScript; the filter also lives in the URL fragment
(`gallery.html#status=failed&category=color`), so a filtered view can be shared or opened directly.
The page needs no server: thumbnails are data URLs while they total under 8 MB, else JPEG files in
OUTPUT/gallery/ next to the page. At most `max_rows_per_status` rows of each status are shown, so
failures stay visible in runs with many ok rows.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from imgedit_ds.arrow import batches_at
from imgedit_ds.edit.base import STATUSES
from imgedit_ds.schema import SCHEMA_COLUMNS

logger = logging.getLogger(__name__)

THUMB_SIZE = 256
INLINE_LIMIT = 8 * 1024 * 1024
BATCH_ROWS = 256
THUMB_DIR = "gallery"


@dataclass
class Thumb:
    data: bytes | None
    src: str = ""


@dataclass
class GalleryRow:
    values: dict[str, Any]
    sources: list[Thumb]
    edited: Thumb | None
    extras: dict[str, Any] = field(default_factory=dict)


def write_gallery(output_dir: str | Path, max_rows_per_status: int = 200) -> Path:
    """Write OUTPUT/gallery.html from OUTPUT/dataset and return its path."""
    output_dir = Path(output_dir)
    dataset = datasets.load_from_disk(str(output_dir / "dataset"))
    table = dataset.data.table
    counts = Counter(table.column("status").to_pylist())
    categories = Counter(_category(c) for c in table.column("category").to_pylist())
    rows = _select_rows(table, max_rows_per_status)
    thumbs = [t for row in rows for t in [*row.sources, row.edited] if t is not None and t.data]
    _place_thumbs(thumbs, output_dir)
    path = output_dir / "gallery.html"
    path.write_text(_page(output_dir.name, rows, counts, categories), encoding="utf-8")
    logger.debug("gallery of %d rows: %s", len(rows), path)
    return path


def _category(value: str | None) -> str:
    return value or "(none)"


def _select_rows(table: Any, per_status: int) -> list[GalleryRow]:
    """The first `per_status` rows of each status, in dataset order; only their images are read."""
    taken: Counter[str] = Counter()
    indices = []
    for index, status in enumerate(table.column("status").to_pylist()):
        if taken[status] < per_status:
            taken[status] += 1
            indices.append(index)
    extra_columns = [c for c in table.column_names if c not in SCHEMA_COLUMNS]
    rows = []
    # Decoding dominates and Pillow releases the GIL while it decodes: thumbnails are made on threads.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for record_batch in batches_at(table, indices, BATCH_ROWS):
            batch = record_batch.to_pylist()
            pending = [([pool.submit(_thumb, s.get("bytes")) for s in row["source_images"] or [] if s],
                        pool.submit(_thumb, row["edited_image"]["bytes"]) if row["edited_image"] else None)
                       for row in batch]
            for row, (sources, edited) in zip(batch, pending):
                extras = {c: row[c] for c in extra_columns if isinstance(row[c], (str, int, float, bool))}
                values = {k: row[k] for k in ("id", "status", "instruction", "category", "error")}
                rows.append(GalleryRow(values, [f.result() for f in sources], edited.result() if edited else None,
                                       extras))
    return rows


def _thumb(data: bytes | None) -> Thumb:
    """A JPEG thumbnail, or an empty Thumb when the bytes do not decode (the page says so)."""
    if not data:
        return Thumb(None)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))  # JPEG: decode at a reduced scale
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            rgba = image.convert("RGBA")
    except Exception:  # Pillow raises many types for broken files; the row shows "does not decode"
        return Thumb(None)
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=80)
    return Thumb(buffer.getvalue())


def _place_thumbs(thumbs: list[Thumb], output_dir: Path) -> None:
    """Data URLs while they stay small enough for one file, else files under OUTPUT/gallery/."""
    folder = output_dir / THUMB_DIR
    shutil.rmtree(folder, ignore_errors=True)
    inline = sum(len(t.data or b"") for t in thumbs) <= INLINE_LIMIT
    if not inline:
        folder.mkdir()
    for number, thumb in enumerate(thumbs):
        if inline:
            thumb.src = "data:image/jpeg;base64," + base64.b64encode(thumb.data or b"").decode()
        else:
            (folder / f"{number:06d}.jpg").write_bytes(thumb.data or b"")
            thumb.src = f"{THUMB_DIR}/{number:06d}.jpg"


def _figure(thumb: Thumb | None, caption: str) -> str:
    if thumb is None:
        body = '<div class="missing">no image</div>'
    elif not thumb.src:
        body = '<div class="missing">does not decode</div>'
    else:
        body = f'<img src="{thumb.src}" alt="{escape(caption)}" loading="lazy">'
    return f"<figure>{body}<figcaption>{escape(caption)}</figcaption></figure>"


def _article(row: GalleryRow) -> str:
    v = row.values
    status = escape(str(v["status"]))
    sources = "".join(_figure(t, f"source {k + 1}" if len(row.sources) > 1 else "source")
                      for k, t in enumerate(row.sources))
    facts = [("id", v["id"]), ("category", _category(v["category"]))]
    facts += [(k, f"{x:.4g}" if isinstance(x, float) else x) for k, x in row.extras.items()]
    if v["error"]:
        facts.append(("error", v["error"]))
    facts_html = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(x))}</dd>" for k, x in facts)
    return (
        f'<article class="row" data-status="{status}" '
        f'data-category="{escape(_category(v["category"]))}">'
        f'<div class="images">{sources}{_figure(row.edited, "edited")}</div>'
        f'<div class="text"><span class="status status-{status}">{status}</span>'
        f'<p class="instruction">{escape(v["instruction"] or "")}</p><dl>{facts_html}</dl></div></article>'
    )


def _options(values: Counter[str], label: str) -> str:
    items = [f'<option value="">all {label}</option>']
    items += [f'<option value="{escape(k)}">{escape(k)} ({n})</option>' for k, n in values.items()]
    return "".join(items)


def _page(name: str, rows: list[GalleryRow], counts: Counter[str], categories: Counter[str]) -> str:
    statuses = Counter({s: counts[s] for s in STATUSES if counts[s]})
    categories = Counter(dict(sorted(categories.items())))
    summary = ", ".join(f"{n} {s}" for s, n in statuses.items())
    articles = "\n".join(_article(r) for r in rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(name)}: imgedit-ds gallery</title>
<style>{CSS}</style></head>
<body>
<header><h1>{escape(name)}</h1>
<p class="summary">{sum(counts.values())} rows: {escape(summary)}. Showing {len(rows)}
(at most a few hundred of each status).</p>
<div class="filters">
<label>Status <select id="status-filter">{_options(statuses, "statuses")}</select></label>
<label>Category <select id="category-filter">{_options(categories, "categories")}</select></label>
<span id="shown-count">{len(rows)} shown</span></div></header>
<main id="rows">
{articles}
</main>
<script>{SCRIPT}</script>
</body></html>
"""


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{position:sticky;top:0;background:#fff;padding:8px 16px;border-bottom:1px solid #ccc;z-index:1}
h1{font-size:18px;margin:4px 0}.summary{margin:2px 0 6px}
.filters label{margin-right:16px}
main{display:flex;flex-direction:column;gap:10px;padding:12px 16px}
.row{display:flex;gap:16px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.row[hidden]{display:none}
.images{display:flex;gap:8px}
figure{margin:0;text-align:center}
figure img,.missing{width:200px;height:200px;object-fit:contain;background:#eee;display:block}
.missing{display:flex;align-items:center;justify-content:center;color:#777}
figcaption{font-size:12px;color:#555}
.instruction{font-size:15px;font-weight:600;margin:6px 0}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 10px;margin:0}dt{color:#666}dd{margin:0}
.status{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px}
.status-ok{background:#1e823c}.status-failed{background:#be2828}.status-refused{background:#c87800}
.status-unsupported{background:#6e6e6e}
"""

SCRIPT = """
(function () {
  var status = document.getElementById('status-filter');
  var category = document.getElementById('category-filter');
  var rows = Array.prototype.slice.call(document.querySelectorAll('article.row'));
  function apply() {
    var shown = 0;
    rows.forEach(function (row) {
      var show = (!status.value || row.dataset.status === status.value) &&
                 (!category.value || row.dataset.category === category.value);
      row.hidden = !show;
      if (show) { shown += 1; }
    });
    document.getElementById('shown-count').textContent = shown + ' shown';
  }
  function fromHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    status.value = params.get('status') || '';
    category.value = params.get('category') || '';
    apply();
  }
  function toHash() {
    var params = new URLSearchParams();
    if (status.value) { params.set('status', status.value); }
    if (category.value) { params.set('category', category.value); }
    location.hash = params.toString();
    apply();
  }
  status.addEventListener('change', toHash);
  category.addEventListener('change', toHash);
  window.addEventListener('hashchange', fromHash);
  fromHash();
})();
"""
