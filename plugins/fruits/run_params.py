"""A run's parameters, parsed once.

The DAG's Params (`param_specs`: the UI form of a manual run; scheduled runs and backfills take the
defaults, which are the nightly product) become a frozen `RunParams` in the run's first task: `parse`
checks every value there, with a ValueError naming the Param. Later tasks rebuild it from XCom
(`RunParams.from_dict(value.as_dict())`); library functions take a RunParams or plain values, never the
raw Params dict. What depends on the lake (pca_k against the rows) is checked at plan time.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from fruits import emr_cluster, gdpr, lake, steps
from fruits.settings import PipelineSettings

# The ClusterSizing fields a manual run may set; the rest keep their defaults.
SIZING_PARAMS = ("architecture", "core_count", "task_count", "spot", "worker_instance_types", "primary_instance_types")
RUNTIMES = ("litert", "keras")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BATCH_PATTERN = lake.BATCH_PATTERN
# A run's partition key is its night, the batch it processes (the DAG's timetable formats it so).
PARTITION_KEY_FORMAT = "%Y-%m-%d"


@dataclass(frozen=True)
class RunParams:
    batch: str
    # A folder of this batch's photos; None: the dated landing <fruits_landing>/<batch>/.
    landing: str | None = None
    pca_mode: str = steps.PCA_AUTO
    pca_variance: float | None = None
    pca_k: int | None = None
    pca_drift_threshold: float | None = None
    # None: the lake's models/ copy, checked against its recorded sha256 (fruits.release.default_weights).
    weights: str | None = None
    weights_sha256: str | None = None
    runtime: str | None = None
    dry_run: bool = False
    sizing: emr_cluster.ClusterSizing = field(default_factory=emr_cluster.ClusterSizing)

    @property
    def explicit_landing(self) -> bool:
        """Whether the `landing` Param names the batch's folder (else `<fruits_landing>/<batch>/`)."""
        return self.landing is not None

    def mode_for(self, current_basis: int | None) -> str:
        """The PCA mode this run uses: the Param, except that an auto run given pca_k or pca_variance
        while a basis exists refits (a basis size asked for by hand is never silently ignored)."""
        asked = self.pca_k is not None or self.pca_variance is not None
        if self.pca_mode == steps.PCA_AUTO and asked and current_basis is not None:
            return steps.PCA_REFIT
        return self.pca_mode

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunParams:
        sizing = {k: tuple(v) if isinstance(v, list) else v for k, v in data.get("sizing", {}).items()}
        return cls(**{**data, "sizing": emr_cluster.ClusterSizing(**sizing)})


def _refuse(name: str, why: str) -> ValueError:
    return ValueError(f"Param {name}: {why}")


def _number(raw: Mapping[str, Any], name: str) -> float | None:
    value = raw.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _refuse(name, f"a number, not {value!r}")
    return value


def _in_allowed_bucket(uri: str, settings: PipelineSettings, name: str) -> None:
    if urlparse(uri).scheme == "s3" and gdpr.s3_bucket_of(uri) not in settings.allowed_bucket_list:
        raise _refuse(
            name,
            f"{uri!r} is outside the lake's buckets {list(settings.allowed_bucket_list)} "
            "(add an EU bucket to the Variable fruits_allowed_buckets to allow it)",
        )


def parse(raw: Mapping[str, Any], *, night: str | None, settings: PipelineSettings) -> RunParams:
    """The run's Params as a RunParams, every value checked before anything is uploaded or started:
    ValueError naming the Param. The batch is the Param's, else `night` (the run's partition key: a
    scheduled run's is the previous Paris day, a backfill's each night it addresses). `settings`
    (Variables, target) say which buckets and schemes are allowed; the landing checked is the Param's,
    else the Variable fruits_landing."""
    if not (raw.get("batch") or night):
        raise _refuse("batch", "empty, and the run has no partition key: a manual run names its night (YYYY-MM-DD)")
    if raw.get("batch") and night and raw["batch"] != night:
        raise _refuse("batch", f"{raw['batch']!r} is not the run's partition key {night!r}, its asset events' night")
    try:
        batch = lake.check_batch(raw.get("batch") or night)
    except ValueError as error:
        raise _refuse("batch", str(error)) from None
    mode = raw.get("pca_mode") or steps.PCA_AUTO
    if mode not in steps.PCA_MODES:
        raise _refuse("pca_mode", f"one of {list(steps.PCA_MODES)}, not {mode!r}")
    k = raw.get("pca_k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= steps.FEATURE_DIMENSIONS):
        raise _refuse("pca_k", f"an integer from 1 to {steps.FEATURE_DIMENSIONS} (the features' dimensions), not {k!r}")
    if k is not None and mode == steps.PCA_PROJECT:
        raise _refuse("pca_k", "chooses the size of a new basis, and pca_mode=project never fits one")
    variance = _number(raw, "pca_variance")
    if variance is not None and not 0 < variance <= 1:
        raise _refuse("pca_variance", f"a share in (0, 1], not {variance!r}")
    threshold = _number(raw, "pca_drift_threshold")
    if threshold is not None and not threshold > 0:
        raise _refuse("pca_drift_threshold", f"a number > 0, not {threshold!r}")

    weights, weights_sha256 = raw.get("weights") or None, raw.get("weights_sha256") or None
    if weights:
        scheme = urlparse(weights).scheme
        if settings.target == "emr" and scheme != "s3":
            raise _refuse("weights", f"the cluster reads only S3 (no internet): an s3:// URI, not {weights!r}")
        if scheme not in ("s3", "file", ""):
            raise _refuse("weights", f"an s3:// or local file URI, not {weights!r}")
        _in_allowed_bucket(weights, settings, "weights")
    if weights_sha256 and not weights:
        raise _refuse("weights_sha256", "checks the file named by Param weights, which is empty")
    if weights_sha256 and not _SHA256.match(weights_sha256):
        raise _refuse("weights_sha256", f"64 lowercase hex digits, not {weights_sha256!r}")
    runtime = raw.get("runtime") or None
    if runtime is not None and runtime not in RUNTIMES:
        raise _refuse("runtime", f"one of {list(RUNTIMES)}, not {runtime!r}")

    landing = raw.get("landing") or None
    if landing and urlparse(landing).scheme not in ("s3", "file", ""):
        raise _refuse("landing", f"an s3:// prefix or a local folder, not {landing!r}")
    _in_allowed_bucket(
        landing or settings.landing, settings, "landing" if landing else "landing (empty: Variable fruits_landing)"
    )

    sizing = {
        name: tuple(v) if isinstance(v, list) else v for name in SIZING_PARAMS if (v := raw.get(name)) is not None
    }
    try:
        cluster = emr_cluster.ClusterSizing(**sizing)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Params {', '.join(sorted(sizing))}: {error}") from None
    return RunParams(
        batch=batch,
        landing=landing,
        pca_mode=mode,
        pca_variance=variance,
        pca_k=k,
        pca_drift_threshold=threshold,
        weights=weights,
        weights_sha256=weights_sha256,
        runtime=runtime,
        dry_run=bool(raw.get("dry_run", False)),
        sizing=cluster,
    )


def sizing_param_specs() -> dict[str, dict[str, Any]]:
    """JSON-schema of the sizing Params, derived from ClusterSizing's fields and defaults."""
    defaults = emr_cluster.ClusterSizing()
    specs: dict[str, dict[str, Any]] = {}
    for name in SIZING_PARAMS:
        default = getattr(defaults, name)
        if isinstance(default, bool):
            spec = {"type": "boolean"}
        elif isinstance(default, int):
            spec = {"type": "integer", "minimum": 1 if name == "core_count" else 0}
        elif isinstance(default, tuple):
            spec = {
                "type": "array",
                "items": {"type": "string", "enum": sorted(emr_cluster.INSTANCE_TYPES)},
                "maxItems": 5,
            }
            default = list(default)
        else:
            spec = {"type": "string", "enum": list(emr_cluster.ARCHITECTURES)}
        specs[name] = {"default": default, **spec}
    return specs


def param_specs(target: str) -> dict[str, dict[str, Any]]:
    """The run's typed Params, each `Param(**spec)` in the DAG file; what the schema cannot say (a real
    date, a bucket, k against the rows) `parse` and the plan refuse."""
    specs: dict[str, dict[str, Any]] = {
        "batch": {
            "default": None,
            "type": ["null", "string"],
            "pattern": _BATCH_PATTERN,
            "description": "Batch id (YYYY-MM-DD, a real date): the night whose landing folder the run "
            "ingests; empty: the run's partition key (a scheduled run's is the previous Paris day).",
        },
        "landing": {
            "default": None,
            "type": ["null", "string"],
            "description": "Folder or s3:// prefix holding this batch's photos; "
            "empty: <Variable fruits_landing>/<batch>/.",
        },
        "pca_mode": {
            "default": steps.PCA_AUTO,
            "type": "string",
            "enum": list(steps.PCA_MODES),
            "description": "auto (default): project on the current basis, fit a new one when there is "
            "none or the batch drifted; refit: force a new basis from the retained "
            "batches' statistics; project: never fit.",
        },
        "pca_variance": {
            "default": None,
            "type": ["null", "number"],
            "exclusiveMinimum": 0,
            "maximum": 1,
            "description": "A new basis keeps the fewest components explaining this share of "
            "variance (set on an auto run: a new basis is fitted); empty: the job's "
            "default.",
        },
        "pca_k": {
            "default": None,
            "type": ["null", "integer"],
            "minimum": 1,
            "maximum": steps.FEATURE_DIMENSIONS,
            "description": "A new basis has exactly this many components (wins over pca_variance; "
            "set on an auto run: a new basis is fitted).",
        },
        "pca_drift_threshold": {
            "default": None,
            "type": ["null", "number"],
            "exclusiveMinimum": 0,
            "description": "Drift past which auto fits a new basis; empty: Variable "
            "fruits_pca_drift_threshold, else the job's default.",
        },
        "weights": {
            "default": None,
            "type": ["null", "string"],
            "description": "s3:// URI (lake or allowed bucket) of the MobileNetV2 no-top weights; "
            "empty: the lake's models/ copy, checked against its recorded sha256.",
        },
        "weights_sha256": {
            "default": None,
            "type": ["null", "string"],
            "pattern": "^[0-9a-f]{64}$",
            "description": "sha256 the weights file must have (featurize refuses others).",
        },
        "runtime": {
            "default": None,
            "type": ["null", "string"],
            "enum": [None, *RUNTIMES],
            "description": "Inference runtime of featurize; empty: the job's default.",
        },
        "dry_run": {
            "default": False,
            "type": "boolean",
            "description": "Check, count the new photos and plan the jobs; upload and run nothing.",
        },
    }
    if target == "emr":
        specs.update(sizing_param_specs())
    return specs
