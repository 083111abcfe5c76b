"""The run report page: one self-contained HTML page per batch, `reports/batch=<ds>/run_report.html`.

Written by `fruits.run_report.report_run` beside run_report.json|md, for a person to read in a minute:
the counts from landing to outputs (`_ingestion.json`, the features and quarantine markers, the PCA
report), throughput per vCPU, the estimate beside the measured cost, the explained-variance curve, the
drift of the last RECENT_NIGHTS nights, a scatter of the batch on pc_1/pc_2 coloured by label, a few
photos with their nearest neighbours in the reduced space, thumbnails of the quarantined files, and links
to the committed outputs (and, on EMR, to the cluster and its steps).

Self-contained: pictures are inline SVG or `data:` JPEG thumbnails (<= THUMB_PX px), no script, no font,
no stylesheet outside the page, so it opens from the lake or from Airflow without any request. What it
reads is bounded by the batch (its reduced rows, streamed, a SAMPLE_ROWS sample kept) and by constants
(RECENT_NIGHTS run reports, the bundles holding the photos shown), never by the lake's history.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import html
import io
import json
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lakefiles
import numpy as np

from fruits import lake, storage, upload

log = logging.getLogger(__name__)

PAGE = "run_report.html"
RECENT_NIGHTS = 30
SAMPLE_ROWS = 3000  # points of the scatter, and the pool the examples are picked from
EXAMPLES = 4
NEIGHBOURS = 4
QUARANTINE_SHOWN = 12
THUMB_PX = 96
# Pixels a thumbnail may decode (after a JPEG's draft): a 48-Mpx phone photo draws; a 169-Mpx PNG of 0.7 MB
# (1.3 GiB decoded) is refused from its header, on the Airflow worker that draws the page.
THUMB_MAX_PIXELS = 50_000_000
NO_LABEL = "(no label)"  # a row featurize found no label folder for (its label is null)
JPEG_QUALITY = 75
PHOTOS_AT_ONCE = 4  # a bundle's photos decoded from Parquet at a time: 48-Mpx originals are 10-20 MB each
REDUCED_FOLDER = "reduced/"  # spark_jobs/pca.py REDUCED_FOLDER: the Parquet rows of a reduced output


# ---------------------------------------------------------------------------------------------
# Reading the lake (bounded)
# ---------------------------------------------------------------------------------------------


def landing_counts(store: Any, root: str, batch: str) -> dict[str, Any] | None:
    """Every landing file of the batch by outcome (all attempts), from the counts the ingestion wrote beside
    `_ingestion.json` (a batch ingested before them: the report's files, counted); None before an upload."""
    data = store.read_or_none(storage.ingestion_counts_uri(root, batch))
    if data is not None:
        return json.loads(data)["landing"]
    data = store.read_or_none(storage.ingestion_report_uri(root, batch))
    return None if data is None else lakefiles.outcome_counts(json.loads(data)["files"])


def _parquet_batches(store: Any, uris: Sequence[str], columns: list[str]) -> Iterator[Any]:
    """The page's Parquet reads, 4,096 rows at a time."""
    return storage.parquet_batches(store, uris, columns, rows=4096)


def quarantined(store: Any, root: str, batch: str) -> tuple[dict[str, int], list[dict[str, str]]]:
    """({reason: count}, the first QUARANTINE_SHOWN rows) of the batch's committed quarantine."""
    files = [u for u in lake.committed_files(store, lake.quarantine_uri(root, batch)) if u.endswith(".parquet")]
    reasons: collections.Counter[str] = collections.Counter()
    shown: list[dict[str, str]] = []
    for record_batch in _parquet_batches(store, files, ["path", "reason"]):
        rows = record_batch.to_pylist()
        reasons.update(_reason_kind(row["reason"]) for row in rows)
        shown += rows[: QUARANTINE_SHOWN - len(shown)]
    return dict(sorted(reasons.items())), shown


def _reason_kind(reason: str) -> str:
    """featurize's reasons carry the decoder's message: grouped by what precedes it."""
    return reason.split(":", 1)[0]


def reduced_files(store: Any, root: str, version: int, batch: str) -> list[str]:
    """The Parquet files of the batch's committed `reduced/` rows on basis `version`."""
    marker = lake.read_commit(store, lake.pca_reduced_uri(root, version, batch))
    if not marker:
        return []
    location = marker["location"].rstrip("/") + "/"
    return [
        location + name for name in marker["files"] if name.startswith(REDUCED_FOLDER) and name.endswith(".parquet")
    ]


def reduced_sample(store: Any, files: Sequence[str], seed: int) -> dict[str, Any]:
    """A uniform sample of at most SAMPLE_ROWS rows of the batch on its basis (bottom-k of random keys,
    streamed): {"rows": total, "path", "label" (lists), "pca" (n x k float32)}."""
    rng = np.random.default_rng(seed)
    keys = np.empty(0)
    paths: list[str] = []
    labels: list[str] = []
    vectors = np.empty((0, 0), dtype=np.float32)
    total = 0
    for record_batch in _parquet_batches(store, files, ["path", "label", "pca"]):
        n = record_batch.num_rows
        if not n:
            continue
        total += n
        block = _vectors(record_batch)
        keys = np.concatenate([keys, rng.random(n)])
        paths += record_batch.column("path").to_pylist()
        labels += _labels(record_batch)
        vectors = block if not vectors.size else np.vstack([vectors, block])
        if keys.size > SAMPLE_ROWS:
            keep = np.sort(np.argpartition(keys, SAMPLE_ROWS)[:SAMPLE_ROWS])
            keys, vectors = keys[keep], vectors[keep]
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return {"rows": total, "path": paths, "label": labels, "pca": vectors}


def _labels(record_batch: Any) -> list[str]:
    return [NO_LABEL if label is None else label for label in record_batch.column("label").to_pylist()]


def _vectors(record_batch: Any) -> np.ndarray:
    column = record_batch.column("pca")
    k = len(column[0]) if len(column) else 0
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, k)


def pick_examples(labels: Sequence[str], count: int = EXAMPLES) -> list[int]:
    """Indices of `count` rows of distinct labels spread over the sorted labels (deterministic)."""
    first: dict[str, int] = {}
    for index, label in enumerate(labels):
        first.setdefault(label, index)
    names = sorted(first)
    if not names:
        return []
    step = max(len(names) / count, 1)
    return [first[names[int(i * step)]] for i in range(min(count, len(names)))]


def nearest_neighbours(
    queries: np.ndarray, query_paths: Sequence[str], sample: Mapping[str, Any], store: Any, files: Sequence[str]
) -> list[list[tuple[str, str, float]]]:
    """The NEIGHBOURS nearest rows of the whole batch (Euclidean, reduced space) for each query: from the
    sample when it holds the whole batch, else in a second streamed pass over the reduced files."""
    best: list[list[tuple[float, str, str]]] = [[] for _ in query_paths]

    def offer(paths: Sequence[str], labels: Sequence[str], block: np.ndarray) -> None:
        distances = np.sqrt(((block[None, :, :] - queries[:, None, :]) ** 2).sum(axis=2))
        for q, row in enumerate(distances):
            take = np.argsort(row)[: NEIGHBOURS + 1]
            merged = best[q] + [(float(row[i]), paths[i], labels[i]) for i in take if paths[i] != query_paths[q]]
            best[q] = sorted(merged)[:NEIGHBOURS]

    if sample["rows"] <= len(sample["path"]):
        offer(sample["path"], sample["label"], sample["pca"])
    else:
        for record_batch in _parquet_batches(store, files, ["path", "label", "pca"]):
            offer(record_batch.column("path").to_pylist(), _labels(record_batch), _vectors(record_batch))
    return [[(path, label, distance) for distance, path, label in found] for found in best]


def recent_nights(store: Any, root: str, batch: str, report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The PCA figures of the RECENT_NIGHTS nights up to this batch, from their run reports (one GET each,
    whatever the lake's age); nights without a report are left out."""
    day = dt.date.fromisoformat(batch)
    nights = []
    for back in range(RECENT_NIGHTS - 1, -1, -1):
        night = (day - dt.timedelta(days=back)).isoformat()
        if night == batch:
            found: Mapping[str, Any] | None = report
        else:
            data = store.read_or_none(lake.reports_uri(root, night) + "run_report.json")
            found = json.loads(data) if data else None
        pca = (found or {}).get("pca") or {}
        drift = pca.get("drift_on_basis") or pca.get("drift") or {}
        if pca:
            nights.append(
                {
                    "batch": night,
                    "basis": pca.get("basis"),
                    "k": pca.get("k"),
                    "captured_share": drift.get("captured_share"),
                    "captured_share_drop": drift.get("captured_share_drop"),
                    "mean_shift": drift.get("mean_shift"),
                    "threshold": drift.get("threshold"),
                    "crossed": drift.get("crossed"),
                }
            )
    return nights


def photo_thumbnails(
    store: Any, root: str, batch: str, paths: Sequence[str]
) -> tuple[dict[str, str | None], dict[str, str]]:
    """({path: data: URI of a JPEG thumbnail, or None}, {path: why it is not drawn}), read from the batch's raw
    bundles (the manifest, streamed, says which bundle holds each photo; only the row groups holding one are read,
    their photos a few at a time). A path is matched whatever its `file:` spelling (Spark's rows say `file:/x`, the
    bundles `file:///x`)."""

    raw = lake.raw_uri(root, batch)
    prefix = lake.normal_uri(raw)
    wanted: dict[str, list[str]] = {}  # key in the batch -> the paths (spellings) asking for it
    for path in paths:
        if lake.normal_uri(path).startswith(prefix):
            wanted.setdefault(lake.normal_uri(path)[len(prefix) :], []).append(path)
    thumbs: dict[str, str | None] = {path: None for path in paths}
    notes: dict[str, str] = {path: "not in the batch's bundles" for path in paths}
    left = set(wanted)
    for bundle, keys in storage.manifest_bundles(store, root, batch):
        needed = [raw + key for key in keys if key in left]
        if not needed or not store.is_file(raw + bundle):
            continue
        for row in _bundle_rows(store, raw + bundle, needed):
            uri, why = draw(row.get(lake.DERIVATIVE_COLUMN) or row["content"])  # a decoded photo's small copy first
            for path in wanted[row["path"][len(raw) :]]:
                thumbs[path] = uri
                notes[path] = why
        left -= {key[len(raw) :] for key in needed}
        if not left:
            break
    return thumbs, {path: why for path, why in notes.items() if not thumbs[path]}


def _bundle_rows(store: Any, uri: str, paths: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of these photos in a bundle: the `path` column of each row group, then the photos (and the
    derivatives of those the ingest pass decoded) of only the row groups holding one, a few at a time (a bundle of
    a thousand phone photos is ~3 GB)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    with storage.parquet_file(store, uri) as bundle:
        derivative = [lake.DERIVATIVE_COLUMN] if lake.DERIVATIVE_COLUMN in bundle.schema_arrow.names else []
        columns = ["path", "content", *derivative]
        for group in range(bundle.metadata.num_row_groups):
            if not pc.any(pc.is_in(bundle.read_row_group(group, columns=["path"])["path"], pa.array(paths))).as_py():
                continue
            for rows in bundle.iter_batches(batch_size=PHOTOS_AT_ONCE, row_groups=[group], columns=columns):
                yield from rows.filter(pc.is_in(rows["path"], pa.array(paths))).to_pylist()


def draw(content: bytes) -> tuple[str | None, str]:
    """(a data: URI of the photo as a JPEG of at most THUMB_PX px a side, "") or (None, why it is not drawn).
    The pixel count is read from the header and checked before a pixel is decoded (a JPEG after its draft)."""
    from PIL import ImageOps

    Image = upload.pillow_image()  # Pillow with the upload's HEIF/AVIF openers
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: THUMB_MAX_PIXELS below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content))
        with image:
            image.draft("RGB", (THUMB_PX, THUMB_PX))  # a JPEG decodes at 1/2 to 1/8 scale
            width, height = image.size
            if width * height > THUMB_MAX_PIXELS:
                return None, f"{width}x{height} px, over the {THUMB_MAX_PIXELS / 1e6:.0f} Mpx a thumbnail may decode"
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    except Image.DecompressionBombError as error:  # over Pillow's own hard limit: refused from the header
        return None, f"too many pixels to draw ({error})"
    except Exception as error:  # noqa: BLE001 - a quarantined file is often no image at all: listed without a picture
        return None, f"cannot be drawn ({type(error).__name__})"
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode(), ""


def thumbnail(content: bytes) -> str | None:
    """A data: URI of the photo as a JPEG of at most THUMB_PX px a side; None when it is not drawn (`draw` says why)."""
    return draw(content)[0]


def gather(
    store: Any, root: str, batch: str, report: Mapping[str, Any], pca_report: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Everything the page shows, read from the lake (committed outputs only)."""
    lake.check_batch(batch)
    facts: dict[str, Any] = {
        "report": dict(report),
        "pca_report": dict(pca_report or {}),
        "landing": landing_counts(store, root, batch),
        "nights": recent_nights(store, root, batch, report),
    }
    facts["quarantine_reasons"], shown = quarantined(store, root, batch)
    facts["quarantine"] = shown
    facts["sample"], facts["examples"] = None, []
    version = (pca_report or {}).get("basis")
    files = reduced_files(store, root, int(version), batch) if version else []
    photos = [row["path"] for row in shown]
    if files:
        sample = reduced_sample(store, files, seed=int(batch.replace("-", "")))
        facts["sample"] = {
            "rows": sample["rows"],
            "label": sample["label"],
            "xy": sample["pca"][:, :2].tolist() if sample["pca"].shape[1] >= 2 else [],
        }
        chosen = pick_examples(sample["label"])
        if chosen:
            queries = sample["pca"][chosen]
            query_paths = [sample["path"][i] for i in chosen]
            found = nearest_neighbours(queries, query_paths, sample, store, files)
            facts["examples"] = [
                {"path": path, "label": sample["label"][i], "neighbours": near}
                for i, path, near in zip(chosen, query_paths, found)
            ]
            photos += query_paths + [path for near in found for path, _, _ in near]
    facts["thumbs"], facts["not_drawn"] = photo_thumbnails(store, root, batch, photos) if photos else ({}, {})
    facts["links"] = output_links(store, root, batch, version, report)
    return facts


def _browse(uri: str, region: str) -> str:
    """Where a person opens a lake URI: the S3 console (EU region) for s3://, the file itself locally."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        return f"https://{region}.console.aws.amazon.com/s3/buckets/{bucket}?region={region}&prefix={key}"
    return uri


def output_links(
    store: Any, root: str, batch: str, version: int | None, report: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(name, URL) of the batch's committed outputs and, on EMR, of its cluster and steps."""
    region = report.get("region", "eu-west-3")
    outputs = [("features", lake.features_uri(root, batch)), ("quarantine", lake.quarantine_uri(root, batch))]
    if version:
        outputs.append((f"PCA output on basis {version}", lake.pca_reduced_uri(root, int(version), batch)))
    links = []
    for name, uri in outputs:
        marker = lake.read_commit(store, uri)
        if marker:
            links.append((f"{name} (committed run)", _browse(marker["location"], region)))
    reports = lake.reports_uri(root, batch)
    links += [
        ("run_report.json", _browse(reports + "run_report.json", region)),
        ("run_report.md", _browse(reports + "run_report.md", region)),
        ("raw photos and _ingestion.json", _browse(lake.raw_uri(root, batch), region)),
    ]
    cluster = report.get("cluster") or {}
    if cluster.get("id"):
        from fruits import step_failures  # the console links' one definition (it imports the amazon provider)

        links.append((f"EMR cluster {cluster['id']}", step_failures.cluster_console_url(region, cluster["id"])))
        links += [
            (f"step {step['name']}", step_failures.step_console_url(region, cluster["id"], step["id"]))
            for step in report.get("steps") or []
            if step.get("id")
        ]
    return links


# ---------------------------------------------------------------------------------------------
# Drawing (inline SVG) and the page
# ---------------------------------------------------------------------------------------------


def palette(count: int) -> list[str]:
    """`count` distinguishable colours (golden-angle hues)."""
    return [f"hsl({(i * 137.508) % 360:.0f},65%,{45 + 10 * (i % 2)}%)" for i in range(count)]


def _scale(values: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    return low, (hi - lo) / (high - low)


def line_chart(
    series: Mapping[str, Sequence[float | None]],
    x_labels: Sequence[str],
    *,
    title: str,
    hline: tuple[float, str] | None = None,
    width: int = 520,
    height: int = 220,
    y_range: tuple[float, float] | None = None,
) -> str:
    """An inline SVG line chart: one polyline per series (None values skipped), x = index."""
    left, right, top, bottom = 48, 12, 24, 36
    values = [v for s in series.values() for v in s if v is not None] + ([hline[0]] if hline else [])
    low, per = (
        (y_range[0], (height - top - bottom) / (y_range[1] - y_range[0]))
        if y_range
        else _scale(values, 0, height - top - bottom)
    )
    count = max(len(x_labels), 1)

    def x(i: int) -> float:
        return left + (i + 0.5) * (width - left - right) / count

    def y(v: float) -> float:
        return height - bottom - (v - low) * per

    top_value = low + (height - top - bottom) / per
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{html.escape(title)}">'
        ),
        f'<text x="{left}" y="14" class="t">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" class="ax"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" class="ax"/>',
        f'<text x="{left - 4}" y="{height - bottom}" class="yl">{low:.3g}</text>',
        f'<text x="{left - 4}" y="{top + 8}" class="yl">{top_value:.3g}</text>',
    ]
    every = max(1, math.ceil(count / 8))
    parts += [
        f'<text x="{x(i):.1f}" y="{height - bottom + 14}" class="xl">{html.escape(str(label))}</text>'
        for i, label in enumerate(x_labels)
        if i % every == 0 or i == count - 1
    ]
    if hline:
        parts.append(
            f'<line x1="{left}" y1="{y(hline[0]):.1f}" x2="{width - right}" y2="{y(hline[0]):.1f}" '
            f'class="hl"/><text x="{width - right}" y="{y(hline[0]) - 3:.1f}" class="hlt">'
            f"{html.escape(hline[1])}</text>"
        )
    for number, (name, points) in enumerate(series.items()):
        colour = palette(len(series))[number]
        coords = [f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(points) if v is not None]
        if len(coords) > 1:
            parts.append(f'<polyline points="{" ".join(coords)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [
            f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2.5" fill="{colour}"/>'
            for c in coords
            if count <= 60
        ]
        parts.append(
            f'<text x="{left + 8 + 150 * number}" y="{height - 4}" fill="{colour}" class="lg">'
            f"&#9632; {html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def scatter(
    xy: Sequence[Sequence[float]], labels: Sequence[str], colours: Mapping[str, str], *, size: int = 420
) -> str:
    """An inline SVG scatter of (pc_1, pc_2), one colour per label."""
    pad = 10
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    x_low, x_per = _scale(xs, 0, size - 2 * pad)
    y_low, y_per = _scale(ys, 0, size - 2 * pad)
    per = min(x_per, y_per)
    classes = {label: f"c{i}" for i, label in enumerate(colours)}
    style = "".join(f".{classes[label]}{{fill:{colour}}}" for label, colour in colours.items())
    dots = "".join(
        f'<circle class="{classes[label]}" cx="{pad + (px - x_low) * per:.1f}" '
        f'cy="{size - pad - (py - y_low) * per:.1f}" r="2.2"/>'
        for (px, py), label in zip(xy, labels)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" '
        f'aria-label="the batch on pc_1 and pc_2"><style>{style}</style>'
        f'<rect x="0" y="0" width="{size}" height="{size}" class="frame"/>{dots}</svg>'
    )


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#1d232b}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eef;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#667}.warn{color:#b3261e;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0}figcaption{font-size:12px;color:#445;max-width:110px;word-break:break-word}
.row{display:flex;gap:8px;align-items:flex-start;margin:8px 0;padding:6px;border:1px solid #eef;border-radius:6px}
.row figure:first-child{padding-right:8px;border-right:2px solid #99a}
img{display:block;width:96px;height:96px;object-fit:contain;background:#f4f4f8}
.nopic{width:96px;height:96px;background:#f4f4f8;display:flex;align-items:center;justify-content:center;color:#889;
font-size:11px;text-align:center;overflow:hidden}
.legend span{display:inline-block;margin:0 10px 2px 0;font-size:12px}
svg .t{font-size:13px;font-weight:600}svg .ax{stroke:#889}svg .xl{font-size:10px;text-anchor:middle;fill:#556}
svg .yl{font-size:10px;text-anchor:end;fill:#556}svg .hl{stroke:#b3261e;stroke-dasharray:4 3}
svg .hlt{font-size:10px;text-anchor:end;fill:#b3261e}svg .lg{font-size:11px}svg .frame{fill:none;stroke:#dde}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_number(c)}</td>' if isinstance(c, (int, float)) or c is None else f"<td>{_e(c)}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _picture(uri: str | None, caption: str, why: str = "") -> str:
    if uri:
        picture = f'<img src="{uri}" alt="{_e(caption)}">'
    else:
        picture = f'<div class="nopic" title="{_e(why)}">no picture{f"<br>{_e(why)}" if why else ""}</div>'
    return f"<figure>{picture}<figcaption>{_e(caption)}</figcaption></figure>"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def counts_section(facts: Mapping[str, Any]) -> str:
    report, landing = facts["report"], facts["landing"]
    images, pca = report["images"], report.get("pca") or {}
    rows: list[tuple[str, Any]] = []
    if landing:
        rows += [
            ("landing files seen", landing["seen"]),
            ("uploaded", landing["uploaded"]),
            ("already in the lake", landing["already_in_lake"]),
        ]
        rows += [(f"rejected at upload: {reason}", count) for reason, count in landing["rejected"].items()]
    else:
        rows.append(("landing", "no _ingestion.json for this batch"))
    rows += [
        ("photos featurize read", images["seen"]),
        ("featurized", images["featurized"]),
        ("quarantined by featurize", images["quarantined"]),
    ]
    rows += [(f"quarantined: {reason}", count) for reason, count in facts["quarantine_reasons"].items()]
    if pca:
        rows += [(f"rows on PCA basis {pca.get('basis')} (k={pca.get('k')})", pca.get("rows_read"))]
    return "<h2>From landing to outputs</h2>" + _table(rows)


def cost_section(report: Mapping[str, Any]) -> str:
    throughput, cost = report["throughput"], report["cost"]
    lines = [
        ("images/s per vCPU", throughput.get("images_per_second_per_vcpu")),
        ("images/s", throughput.get("images_per_second")),
        ("executor vCPUs", throughput.get("executor_vcpus")),
        ("measured cost (USD)", cost.get("total_usd")),
        ("measured cost (EUR)", cost.get("total_eur")),
        ("USD per 1,000 images", cost.get("per_1000_images_usd")),
    ]
    out = "<h2>Throughput and cost</h2>" + _table(lines)
    comparison = report.get("estimate_vs_actual")
    if comparison:
        out += _table(
            [(name, row["estimate"], row["actual"], row["actual_over_estimate"]) for name, row in comparison.items()],
            ["", "estimate", "measured", "measured / estimate"],
        )
    else:
        out += '<p class="muted">No estimate was made before this run (local target or a run without a plan).</p>'
    out += f'<p class="muted">{_e(report.get("cost_basis", ""))}</p>'
    return out


def pca_section(facts: Mapping[str, Any]) -> str:
    pca_report, nights = facts["pca_report"], facts["nights"]
    out = "<h2>PCA</h2>"
    if not pca_report:
        return out + '<p class="warn">No committed PCA output of this batch on the current basis.</p>'
    cumulative = pca_report.get("cumulative_explained_variance") or []
    target = pca_report.get("variance_target")
    curve = line_chart(
        {"cumulative explained variance": cumulative},
        [str(i + 1) for i in range(len(cumulative))],
        title=f"explained variance, basis {pca_report.get('basis')}: k = {pca_report.get('k')}",
        hline=(target, f"target {target:g}") if target else None,
        y_range=(0.0, 1.0),
    )
    labels = [night["batch"][5:] for night in nights]
    threshold = next((n["threshold"] for n in reversed(nights) if n.get("threshold") is not None), None)
    drift = line_chart(
        {"captured share drop": [n["captured_share_drop"] for n in nights]},
        labels,
        title=f"drift over the last {len(nights)} night(s) with a report",
        hline=(threshold, f"refit threshold {threshold:g}") if threshold is not None else None,
    )
    shift = line_chart(
        {"mean shift (basis spreads)": [n["mean_shift"] for n in nights]},
        labels,
        title="mean shift of each night against its basis",
    )
    bases = sorted({n["basis"] for n in nights if n.get("basis") is not None})
    out += f'<div class="grid">{curve}{drift}{shift}</div>'
    out += (
        f'<p class="muted">Bases used over these nights: {_e(", ".join(map(str, bases)) or "none")}; '
        f"a night whose drop crosses the threshold fits a new basis (mode auto).</p>"
    )
    sample = facts.get("sample")
    if sample and sample["xy"]:
        names = sorted(set(sample["label"]))
        colours = dict(zip(names, palette(len(names))))
        legend = "".join(f'<span><b style="color:{colours[n]}">&#9679;</b> {_e(n)}</span>' for n in names)
        shown = len(sample["xy"])
        out += (
            f'<h2>The batch on pc_1 / pc_2</h2><p class="muted">{shown:,} of its {sample["rows"]:,} rows'
            f"{' (a uniform sample)' if shown < sample['rows'] else ''}, coloured by label.</p>"
            f'<div class="grid">{scatter(sample["xy"], sample["label"], colours)}'
            f'<div class="legend" style="max-width:600px">{legend}</div></div>'
        )
    return out


def examples_section(facts: Mapping[str, Any]) -> str:
    if not facts["examples"]:
        return ""
    thumbs, why = facts["thumbs"], facts.get("not_drawn", {})
    out = [
        (
            f'<h2>Nearest neighbours in the reduced space</h2><p class="muted">{len(facts["examples"])} photos '
            f"of the batch (first, outlined) and their {NEIGHBOURS} nearest photos of the batch (Euclidean, "
            "on the basis), with labels and distances.</p>"
        )
    ]
    for example in facts["examples"]:
        path = example["path"]
        figures = [_picture(thumbs.get(path), f"{example['label']} — {_name(path)}", why.get(path, ""))]
        figures += [
            _picture(thumbs.get(near), f"{label} ({distance:.2f})", why.get(near, ""))
            for near, label, distance in example["neighbours"]
        ]
        out.append(f'<div class="row">{"".join(figures)}</div>')
    return "".join(out)


def quarantine_section(facts: Mapping[str, Any]) -> str:
    rows = facts["quarantine"]
    if not rows:
        return "<h2>Quarantine</h2><p>Nothing quarantined by featurize.</p>"
    thumbs, why = facts["thumbs"], facts.get("not_drawn", {})
    total = sum(facts["quarantine_reasons"].values())
    figures = "".join(
        _picture(thumbs.get(row["path"]), f"{_name(row['path'])}: {row['reason']}", why.get(row["path"], ""))
        for row in rows
    )
    return (
        f'<h2>Quarantine</h2><p class="muted">{len(rows)} of {total} quarantined files; '
        f'"no picture" when the file cannot be drawn.</p><div class="grid">{figures}</div>'
    )


def links_section(links: Sequence[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="{_e(url)}" rel="noreferrer">{_e(name)}</a></li>' for name, url in links)
    return f"<h2>Outputs and logs</h2><ul>{items}</ul>"


def render(facts: Mapping[str, Any]) -> str:
    """The page's HTML from `gather`'s facts (pure: no I/O)."""
    report = facts["report"]
    cost = report["cost"]
    status = (
        ""
        if report.get("complete")
        else '<p class="warn">The run failed before featurize committed its metrics: the cost is what the '
        "cluster billed anyway.</p>"
    )
    head = (
        f"<h1>Batch {_e(report['batch'])}: {_number(report['images']['featurized'])} photos featurized, "
        f'{cost["total_usd"]:.4f} USD</h1><p class="muted">target {_e(report["target"])}, region '
        f"{_e(report['region'])}, generated {_e(report['generated_at'])}</p>{status}"
    )
    if report.get("airflow"):
        from fruits.run_report import airflow_run_line

        head += f'<p class="muted">Airflow {_e(airflow_run_line(report["airflow"]))}</p>'

    body = "".join(
        [
            head,
            counts_section(facts),
            cost_section(report),
            pca_section(facts),
            examples_section(facts),
            quarantine_section(facts),
            links_section(facts["links"]),
        ]
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        # No request may leave the page: no script, images only inline, nothing fetched.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f"<title>Fruits! run report {_e(report['batch'])}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_page(
    store: Any, root: str, batch: str, report: Mapping[str, Any], pca_report: Mapping[str, Any] | None
) -> str:
    """Build the batch's page and put it at `reports/batch=<ds>/run_report.html`; returns its URI."""
    page = render(gather(store, root, batch, report, pca_report)).encode()
    uri = lake.reports_uri(root, batch) + PAGE
    store.put(uri, page, storage.sha256_bytes(page))
    log.info("run report page of batch %s: %s (%d bytes)", batch, uri, len(page))
    return uri


def rebuild(store: Any, root: str, batch: str) -> str | None:
    """Redraw a batch's page from the lake as it is now (after an erasure: without the erased photo, whose
    bundle row, reduced row and quarantine row are gone); None when the batch has no page to redraw."""
    from fruits import run_report

    uri = lake.reports_uri(root, batch) + PAGE
    report = run_report.read_json(store, lake.reports_uri(root, batch) + run_report.REPORT_JSON)
    if report is None or store.read_or_none(uri) is None:
        return None
    _, pca_report = run_report.job_outputs(store, root, batch)
    page = render(gather(store, root, batch, report, pca_report)).encode()
    store.delete(uri)  # every version (S3Store.delete): an older one would keep the erased photo's thumbnail
    store.put(uri, page, storage.sha256_bytes(page))
    log.info("run report page of batch %s redrawn: %s", batch, uri)
    return uri
