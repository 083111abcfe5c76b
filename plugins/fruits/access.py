"""The IAM access matrix: what each actor does on S3, per lake area (fruits.lake's layout v2).

One declaration, `MATRIX`, says per actor (a role in one phase of the pipeline) which S3 actions it
needs on which area; `role_grants(role)` is the union over the actor's phases, and tests/test_access.py
checks that infra/foundation.yaml grants each role EXACTLY that (no more, no less) and exercises the
project's stores under moto's IAM-enforcing mode with each role's policy.

The areas are derived from lake.py's URI functions (`area_of`), so a layout change moves the matrix.
Object actions are granted on `<bucket>/<area>/*`; the list actions on the bucket with an `s3:prefix`
condition `<area>/*`; bucket-level actions (the GDPR guard's reads) on the bucket itself (area BUCKET).

Two facts of real S3 drive this matrix beyond "read what you read, write what you write":
- a GET of a missing key answers 403 AccessDenied, not 404 NoSuchKey, without s3:ListBucket on it:
  every reader of an optional object (commit markers, manifests, locks) needs List on its area;
- HeadObject is authorized as s3:GetObject: a Hadoop committer or a store that checks existence
  before writing needs Get on its own output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fruits import lake

_ROOT = "s3://lake"
_DAY = "2026-01-01"

GET = "s3:GetObject"
PUT = "s3:PutObject"
DELETE = "s3:DeleteObject"
GET_VERSION = "s3:GetObjectVersion"
DELETE_VERSION = "s3:DeleteObjectVersion"
ABORT_UPLOAD = "s3:AbortMultipartUpload"
LIST_PARTS = "s3:ListMultipartUploadParts"
LIST = "s3:ListBucket"
LIST_VERSIONS = "s3:ListBucketVersions"
# Actions granted on the bucket ARN with an s3:prefix condition, one area per prefix.
LIST_ACTIONS = (LIST, LIST_VERSIONS)
BUCKET = "<bucket>"  # pseudo-area of the bucket-level actions

# Composite needs.
READ = frozenset({GET, LIST})
# Spark/Hadoop writes large files as multipart uploads, and cleans up after itself (jobio's stale runs).
WRITE_OUTPUT = frozenset({GET, PUT, DELETE, LIST, ABORT_UPLOAD, LIST_PARTS})
ERASE = frozenset({GET, GET_VERSION, PUT, DELETE, DELETE_VERSION, LIST, LIST_VERSIONS})
# EMRFS asks the bucket's region before its first request.
LOCATE = frozenset({"s3:GetBucketLocation"})
GUARD = frozenset({"s3:GetBucketLocation", "s3:GetEncryptionConfiguration", "s3:GetBucketPublicAccessBlock"})


def area_of(uri: str) -> str:
    """The lake area a URI of the lake lies in: `s3://lake/quarantine/batch=.../` -> `quarantine`."""
    if not uri.startswith(_ROOT + "/"):
        raise ValueError(f"{uri!r} is not under the lake root {_ROOT}")
    area = uri[len(_ROOT) + 1 :].split("/", 1)[0]
    if area not in lake.AREAS:
        raise ValueError(f"{uri!r} is in no lake area {lake.AREAS}")
    return area


# The areas, named through lake.py's own functions.
RAW = area_of(lake.raw_uri(_ROOT, _DAY))
INDEX = area_of(lake.area_uri(_ROOT, "index"))
LOCKS = area_of(lake.lock_uri(_ROOT, _DAY))
FEATURES = area_of(lake.features_uri(_ROOT, _DAY))
DERIVED = area_of(lake.derived_uri(_ROOT, _DAY))
QUARANTINE = area_of(lake.quarantine_uri(_ROOT, _DAY))
PCA = area_of(lake.pca_stats_uri(_ROOT, _DAY))
assert PCA == area_of(lake.pca_bases_uri(_ROOT)) == area_of(lake.pca_reduced_uri(_ROOT, 1, _DAY))
REPORTS = area_of(lake.reports_uri(_ROOT, _DAY))
CODE = area_of(lake.code_uri(_ROOT, "v"))
MODELS = area_of(lake.models_uri(_ROOT))
LOGS = area_of(lake.logs_uri(_ROOT))
# Outside the lake: the landing prefix (fruits_landing) the upload reads and clears, and its bucket.
LANDING = "landing"
LANDING_BUCKET = "<landing bucket>"
# Areas that hold photos or rows derived from them (or name them): what erasure must reach.
PERSONAL_AREAS = (RAW, DERIVED, INDEX, LOCKS, FEATURES, QUARANTINE, PCA, REPORTS, LOGS)


@dataclass(frozen=True)
class Actor:
    role: str  # the IAM role/policy: "node", "airflow" or "erasure"
    why: str
    areas: Mapping[str, frozenset[str]]  # area -> actions (object actions and list actions)
    bucket: frozenset[str] = frozenset()  # bucket-level actions
    landing_bucket: frozenset[str] = frozenset()  # bucket-level actions on the landing's bucket


MATRIX: dict[str, Actor] = {
    "node:featurize": Actor(
        "node",
        "reads photos, weights and code; commits features, derivatives and quarantine "
        "(markers read back, stale runs swept); EMR pushes the node logs",
        {
            RAW: READ,
            MODELS: READ,
            CODE: READ,
            FEATURES: WRITE_OUTPUT,
            DERIVED: WRITE_OUTPUT,
            QUARANTINE: WRITE_OUTPUT,
            LOGS: frozenset({PUT}),
        },
        bucket=LOCATE,
    ),
    "node:ingest": Actor(
        "node",
        "reads the night's landing (or the lake's staged copy of a landing outside S3) and tidies it when "
        "landing_after says so; commits bundles, the manifest and the ingestion report in raw/ and the index's "
        "shards (conditional PUTs); deletes its attempt's listing",
        {
            LANDING: frozenset({GET, PUT, DELETE, LIST}),
            RAW: WRITE_OUTPUT,
            INDEX: frozenset({GET, PUT, LIST}),
            CODE: READ,
            LOGS: frozenset({PUT}),
        },
        bucket=LOCATE,
        landing_bucket=LOCATE,
    ),
    "node:pca": Actor(
        "node",
        "reads committed features and code; reads and commits stats, bases, reduced",
        {
            FEATURES: READ,
            CODE: READ,
            PCA: WRITE_OUTPUT,
            LOGS: frozenset({PUT}),
        },
        bucket=LOCATE,
    ),
    "airflow:check_gdpr": Actor(
        "airflow",
        "the GDPR guard reads the lake's and the landing's bucket settings",
        {},
        bucket=GUARD,
        landing_bucket=GUARD,
    ),
    "airflow:list_landing": Actor(
        "airflow",
        "lists the night's landing; writes the listing (and the staged copy of a landing outside S3) in raw/; "
        "deletes the listing of a night with nothing to run",
        {
            LANDING: frozenset({LIST}),
            RAW: frozenset({GET, PUT, DELETE, LIST}),
        },
    ),
    "airflow:upload": Actor(
        "airflow",
        "`fruits.cli.upload`, by hand: reads and clears the landing; writes bundles, manifests and the "
        "dedup index; deletes the bundles an interrupted upload left, every version",
        {
            LANDING: frozenset({GET, DELETE, LIST}),
            RAW: frozenset({GET, PUT, DELETE, DELETE_VERSION, LIST, LIST_VERSIONS}),
            INDEX: frozenset({GET, PUT, LIST}),
        },
    ),
    "airflow:lock": Actor(
        "airflow",
        "takes and releases the batch lock (conditional PUTs)",
        {
            LOCKS: frozenset({GET, PUT, DELETE, LIST}),
        },
    ),
    "airflow:publish_code": Actor(
        "airflow",
        "publishes code/<version>/ once; reads the weights' sidecar",
        {
            CODE: frozenset({GET, PUT, LIST}),
            MODELS: READ,
        },
    ),
    "airflow:plan": Actor(
        "airflow",
        "reconciles: raw batches without committed features, PCA markers",
        {
            RAW: READ,
            FEATURES: READ,
            QUARANTINE: READ,
            PCA: READ,
        },
    ),
    "airflow:retention": Actor(
        "airflow",
        "deletes every version of each batch past its retention, by batch date "
        "(fruits.retention), under its lock; drops its index entries, moves the watermark; "
        "deletes the originals its committed features cover (remove_originals)",
        {
            **{
                area: frozenset({GET, LIST, LIST_VERSIONS, DELETE_VERSION})
                for area in (RAW, DERIVED, FEATURES, QUARANTINE, PCA, REPORTS)
            },
            LOCKS: frozenset({GET, PUT, LIST, LIST_VERSIONS, DELETE_VERSION}),
            INDEX: frozenset({GET, PUT, LIST}),
        },
    ),
    "airflow:explain_failure": Actor("airflow", "reads a failed step's stderr from the log URI", {LOGS: READ}),
    "airflow:report": Actor(
        "airflow",
        "reads the markers, the logs and the photos it draws, writes the run "
        "report and its page, deletes the pages leaving retention, every version",
        {
            FEATURES: READ,
            QUARANTINE: READ,
            PCA: READ,
            LOGS: READ,
            RAW: READ,
            REPORTS: frozenset({GET, PUT, DELETE, DELETE_VERSION, LIST, LIST_VERSIONS}),
        },
    ),
    "erasure": Actor(
        "erasure",
        "erases a photo and every row derived from it, every version, under the "
        "batch lock; code and weights hold no personal data",
        {area: ERASE for area in PERSONAL_AREAS},
        bucket=frozenset({"s3:GetEncryptionConfiguration"}),
    ),
}

ROLES = ("node", "airflow", "erasure")
# The template resource holding each role's S3 grants (infra/foundation.yaml).
ROLE_RESOURCES = {"node": "EmrInstanceRole", "airflow": "AirflowPolicy", "erasure": "ErasurePolicy"}


def role_grants(role: str) -> set[tuple[str, str]]:
    """{(action, area)} a role needs: the union over its actors; bucket-level actions on BUCKET."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {ROLES}")
    grants: set[tuple[str, str]] = set()
    for actor in MATRIX.values():
        if actor.role == role:
            grants |= {(action, area) for area, actions in actor.areas.items() for action in actions}
            grants |= {(action, BUCKET) for action in actor.bucket}
            grants |= {(action, LANDING_BUCKET) for action in actor.landing_bucket}
    return grants


def actor_grants(name: str) -> set[tuple[str, str]]:
    actor = MATRIX[name]
    return (
        {(a, area) for area, actions in actor.areas.items() for a in actions}
        | {(a, BUCKET) for a in actor.bucket}
        | {(a, LANDING_BUCKET) for a in actor.landing_bucket}
    )


def markdown_table() -> str:
    """The matrix for docs: one row per actor, one column per area."""
    areas = [LANDING, *lake.AREAS]
    short = {
        GET: "R",
        PUT: "W",
        DELETE: "D",
        LIST: "L",
        GET_VERSION: "Rv",
        DELETE_VERSION: "Dv",
        LIST_VERSIONS: "Lv",
        ABORT_UPLOAD: "",
        LIST_PARTS: "",
    }
    lines = ["| actor | " + " | ".join(areas) + " |", "|---" * (len(areas) + 1) + "|"]
    for name, actor in MATRIX.items():
        cells = ["".join(sorted(filter(None, (short[a] for a in actor.areas.get(area, ()))))) for area in areas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
