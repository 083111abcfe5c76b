"""The DAG's task bodies as plain functions: the DAG file only wires them. Airflow and its amazon
provider are imported only inside the few helpers that need them (clients from the `aws_default`
connection, fail-now/skip signals), so everything else is testable as plain Python.

Run-time flow: `resolve_settings` (Variables + the run's Params) and `check_params` -> `guard` (GDPR,
before any other AWS call) -> `lock_batch` -> `upload` (images + code) -> `reconcile` (what the lake
says is left to do: nights to catch up, the PCA window) -> `plan_jobs` (cluster request, step and
local commands, all from `fruits.steps` / `fruits.emr_cluster`) -> ... -> `unlock_batch`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlparse

from fruits import emr_cluster, gdpr, lake, steps, upload
from fruits.settings import TARGETS, PipelineSettings, load_settings  # noqa: F401  (TARGETS: the DAG reads it here)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The most small GETs (commit markers) the plan has in flight at once.
READ_CONCURRENCY = 16
# A run holds its batch's lock from before the upload to after the teardown: longer than any run
# (3 job kinds x the 3 h step timeout + cluster start and upload), short enough to free a crashed run's.
LOCK_TTL_SECONDS = 12 * 3600
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def s3_client(settings: PipelineSettings) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).get_conn()


def emr_client(settings: PipelineSettings) -> Any:
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    return EmrHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).conn


@contextmanager
def config_errors_fail_now():
    """A ValueError (GdprViolation, a bad Variable or Param) fails the task at once: retrying cannot fix it."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except ValueError as error:
        raise AirflowFailException(f"{type(error).__name__}: {error}") from error


def pulled(task_id: str, key: str = "return_value") -> str:
    """A template for another task's XCom, '' when that task never ran (an XComArg would fail to render)."""
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}', key='{key}') or '' }}}}"


def skip_without_cluster(context: Mapping[str, Any]) -> None:
    """pre_execute of the teardown: no cluster id means no cluster was created, nothing to terminate."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not context["task"].job_flow_id:
        raise AirflowSkipException("no cluster was created: nothing to terminate")


def run_batch(params: Mapping[str, Any], ds: str) -> str:
    """One logical date = one batch; a manual run may name another batch explicitly."""
    try:
        return lake.check_batch(params.get("batch") or ds)
    except ValueError as error:
        raise ValueError(f"Param batch: {error}") from None


def resolve_settings(get_variable: Callable[[str, Any], Any], params: Mapping[str, Any],
                     target: str) -> PipelineSettings:
    """Settings from Variables, this run's Params on top. `target` is the DAG's parse-time target:
    a `fruits_target` Variable saying otherwise is a configuration error, not something to guess.
    `landing` is the `landing` Param (a folder of this batch's photos) when given, else the Variable
    (the dated landing: the upload reads `<fruits_landing>/<batch>/`, see explicit_landing)."""
    settings = load_settings(get_variable, landing=params.get("landing") or None)
    if settings.target != target and get_variable("fruits_target", None) not in (None, ""):
        raise ValueError(
            f"Variable fruits_target={settings.target!r} but this DAG was parsed for target {target!r} "
            "(env FRUITS_TARGET): set both the same"
        )
    return dataclasses.replace(settings, target=target)


def explicit_landing(params: Mapping[str, Any]) -> bool:
    """Whether the run's `landing` Param names the batch's folder (else `<fruits_landing>/<batch>/`)."""
    return bool(params.get("landing"))


def _bucket_allowed(uri: str, settings: PipelineSettings, param: str) -> None:
    if is_s3(uri) and gdpr.s3_bucket_of(uri) not in settings.allowed_bucket_list:
        raise ValueError(f"Param {param}: {uri!r} is outside the lake's buckets {list(settings.allowed_bucket_list)} "
                         "(add an EU bucket to the Variable fruits_allowed_buckets to allow it)")


def pca_mode(params: Mapping[str, Any], current_basis: Any = None) -> str:
    """The run's PCA mode: the Param, except that an auto run given pca_k or pca_variance while a basis
    exists refits (a basis size asked for by hand is never silently ignored)."""
    mode = params.get("pca_mode") or steps.PCA_AUTO
    asked = params.get("pca_k") is not None or params.get("pca_variance") is not None
    if mode == steps.PCA_AUTO and asked and current_basis is not None:
        return steps.PCA_REFIT
    return mode


def check_params(settings: PipelineSettings, params: Mapping[str, Any]) -> None:
    """Every Param that needs no lake read, checked before anything is uploaded or started: a bad
    value raises ValueError naming the Param (the task fails at once, see config_errors_fail_now)."""
    if (params.get("pca_mode") or steps.PCA_AUTO) not in steps.PCA_MODES:
        raise ValueError(f"Param pca_mode: one of {list(steps.PCA_MODES)}, not {params.get('pca_mode')!r}")
    mode = pca_mode(params)
    k, variance = params.get("pca_k"), params.get("pca_variance")
    if k is not None and not (isinstance(k, int) and 1 <= k <= steps.FEATURE_DIMENSIONS):
        raise ValueError(f"Param pca_k: an integer from 1 to {steps.FEATURE_DIMENSIONS} (the features' "
                         f"dimensions), not {k!r}")
    if k is not None and mode == steps.PCA_PROJECT:
        raise ValueError("Param pca_k: chooses the size of a new basis, and pca_mode=project never fits one")
    if variance is not None and not (isinstance(variance, (int, float)) and 0 < variance <= 1):
        raise ValueError(f"Param pca_variance: a share in (0, 1], not {variance!r}")
    threshold = params.get("pca_drift_threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 0):
        raise ValueError(f"Param pca_drift_threshold: a number > 0, not {threshold!r}")
    weights, weights_sha256 = params.get("weights") or None, params.get("weights_sha256") or None
    if weights:
        scheme = urlparse(weights).scheme
        if settings.target == "emr" and scheme != "s3":
            raise ValueError(f"Param weights: the cluster reads only S3 (no internet): an s3:// URI, not {weights!r}")
        if scheme not in ("s3", "file", ""):
            raise ValueError(f"Param weights: an s3:// or local file URI, not {weights!r}")
        _bucket_allowed(weights, settings, "weights")
    if weights_sha256 and not weights:
        raise ValueError("Param weights_sha256: checks the file named by Param weights, which is empty")
    if weights_sha256 and not _SHA256.match(weights_sha256):
        raise ValueError(f"Param weights_sha256: 64 lowercase hex digits, not {weights_sha256!r}")
    landing = params.get("landing") or None
    if landing and urlparse(landing).scheme not in ("s3", "file", ""):
        raise ValueError(f"Param landing: an s3:// prefix or a local folder, not {landing!r}")
    _bucket_allowed(settings.landing, settings, "landing" if landing else "landing (empty: Variable fruits_landing)")


is_s3 = lake.is_s3  # s3:// and s3a://, as gdpr's bucket checks read them


def guard(settings: PipelineSettings, s3_client_factory: Callable[[], Any]) -> dict[str, str]:
    """Fail closed unless the region and every bucket the run touches are in the allow-list.
    The region is checked before any client exists, so a non-EU region never sees a request."""
    gdpr.check_region(settings.region, settings.allowed_region_list)
    if settings.target == "emr":
        return gdpr.check_settings(settings, s3_client_factory())
    if is_s3(settings.landing):  # local lake, S3 landing: only the landing bucket is AWS
        client = s3_client_factory()
        return {settings.landing: gdpr.check_uri(settings.landing, client, settings.allowed_region_list)}
    return {}


def lake_root(settings: PipelineSettings) -> str:
    if settings.target == "emr":
        return f"s3://{settings.bucket}"
    local = Path(settings.local_lake)
    return upload.file_uri(local if local.is_absolute() else REPO_ROOT / local)


def open_lake(settings: PipelineSettings, s3_client: Any | None) -> upload.Store:
    if settings.target == "emr":
        return upload.S3Store(s3_client, settings.bucket, settings.kms_key_arn)
    return upload.LocalStore(lake_root(settings))


def open_landing(settings: PipelineSettings, s3_client: Any | None, batch: str, *,
                 explicit: bool = False) -> tuple[upload.Store, str]:
    """The batch's landing folder: `<fruits_landing>/<batch>/` (lake.landing_uri: a backfill takes its own
    date's photos only), or, with `explicit` (the run's `landing` Param), the folder the Param names."""
    if not settings.landing:
        raise ValueError("no landing location: set the Variable fruits_landing or the run's 'landing' Param")
    folder = settings.landing if explicit else lake.landing_uri(settings.landing, batch)
    if is_s3(folder):
        return upload.S3Store(s3_client, gdpr.s3_bucket_of(folder)), folder.rstrip("/") + "/"
    path = Path(folder)
    path = path if path.is_absolute() else REPO_ROOT / path
    if not path.is_dir():
        if explicit:
            raise FileNotFoundError(f"landing folder {path} does not exist")
        log.warning("landing folder %s does not exist: no photos for batch %s", path, batch)
    return upload.LocalStore(path), upload.file_uri(path) + "/"


def upload_batch(settings: PipelineSettings, s3_client: Any | None, batch: str, *, dry_run: bool,
                 repo_root: Path = REPO_ROOT, explicit_landing: bool = False) -> dict[str, Any]:
    """`explicit_landing`: the run's `landing` Param named the folder (else the dated folder of `batch`)."""
    lake_store = open_lake(settings, s3_client)
    landing_store, landing_uri = open_landing(settings, s3_client, batch, explicit=explicit_landing)
    images = upload.upload_new_images(lake_store, landing_store, landing_uri, batch, dry_run=dry_run,
                                      landing_after=settings.landing_after,
                                      max_photo_bytes=int(settings.max_photo_bytes))
    release = upload.publish_code(lake_store, repo_root, dry_run=dry_run)
    return {"images": images, "code": release}


def cluster_sizing(params: Mapping[str, Any]) -> emr_cluster.ClusterSizing:
    """ClusterSizing from the run's Params (named after its fields; see sizing_param_specs)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(emr_cluster.ClusterSizing):
        value = params.get(field.name)
        if value is None or field.name not in SIZING_PARAMS:
            continue
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return emr_cluster.ClusterSizing(**values)


# The ClusterSizing fields a manual run may set; the rest keep their defaults.
SIZING_PARAMS = ("architecture", "core_count", "task_count", "spot", "worker_instance_types",
                 "primary_instance_types")


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
            spec = {"type": "array", "items": {"type": "string", "enum": sorted(emr_cluster.INSTANCE_TYPES)},
                    "maxItems": 5}
            default = list(default)
        else:
            spec = {"type": "string", "enum": list(emr_cluster.ARCHITECTURES)}
        specs[name] = {"default": default, **spec}
    return specs


_BATCH_PATTERN = lake.BATCH_PATTERN


def param_specs(target: str) -> dict[str, dict[str, Any]]:
    """The run's typed Params (UI form for manual triggers; scheduled runs and backfills take the
    defaults, which are the nightly product). Each value is `Param(**spec)` in the DAG file; what the
    schema cannot say (a real date, bucket, k against the rows) check_params / check_plan refuse."""
    specs: dict[str, dict[str, Any]] = {
        "batch": {"default": None, "type": ["null", "string"], "pattern": _BATCH_PATTERN,
                  "description": "Batch id (YYYY-MM-DD, a real date); empty: the run's logical date."},
        "landing": {"default": None, "type": ["null", "string"],
                    "description": "Folder or s3:// prefix holding this batch's photos; "
                                   "empty: <Variable fruits_landing>/<batch>/."},
        "pca_mode": {"default": steps.PCA_AUTO, "type": "string", "enum": list(steps.PCA_MODES),
                     "description": "auto (default): project on the current basis, fit a new one when there is "
                                    "none or the batch drifted; refit: force a new basis from the retained batches' "
                                    "statistics; project: never fit."},
        "pca_variance": {"default": None, "type": ["null", "number"], "exclusiveMinimum": 0, "maximum": 1,
                         "description": "A new basis keeps the fewest components explaining this share of "
                                        "variance (set on an auto run: a new basis is fitted); empty: the job's default."},
        "pca_k": {"default": None, "type": ["null", "integer"], "minimum": 1, "maximum": steps.FEATURE_DIMENSIONS,
                  "description": "A new basis has exactly this many components (wins over pca_variance; "
                                 "set on an auto run: a new basis is fitted)."},
        "pca_drift_threshold": {"default": None, "type": ["null", "number"], "exclusiveMinimum": 0,
                                "description": "Drift past which auto fits a new basis; empty: Variable "
                                               "fruits_pca_drift_threshold, else the job's default."},
        "weights": {"default": None, "type": ["null", "string"],
                    "description": "s3:// URI (lake or allowed bucket) of the MobileNetV2 no-top weights; "
                                   "empty: the job's default."},
        "weights_sha256": {"default": None, "type": ["null", "string"], "pattern": "^[0-9a-f]{64}$",
                           "description": "sha256 the weights file must have (featurize refuses others)."},
        "runtime": {"default": None, "type": ["null", "string"], "enum": [None, "litert", "keras"],
                    "description": "Inference runtime of featurize; empty: the job's default."},
        "dry_run": {"default": False, "type": "boolean",
                    "description": "Check, count the new photos and plan the jobs; upload and run nothing."},
    }
    if target == "emr":
        specs.update(sizing_param_specs())
    return specs


# ---------------------------------------------------------------------------------------------
# What the lake says is left to do (before any cluster exists)
# ---------------------------------------------------------------------------------------------


def retained_since(batch: str, retention_days: int) -> str:
    """The oldest batch still retained on the night of `batch` (the lifecycle expires older ones)."""
    return (dt.date.fromisoformat(batch) - dt.timedelta(days=retention_days - 1)).isoformat()


def _read_markers(store: Any, uris: Sequence[str]) -> list[dict[str, Any] | None]:
    """Commit markers, READ_CONCURRENCY GETs in flight (365 retained batches: 23 rounds, not 365)."""
    if not uris:
        return []
    with ThreadPoolExecutor(max_workers=min(READ_CONCURRENCY, len(uris))) as pool:
        return list(pool.map(lambda uri: lake.read_commit(store, uri), uris))


def reconcile(store: Any, root: str, batch: str, *, images_in_batch: int, retention_days: int) -> dict[str, Any]:
    """What tonight's run must do, from the lake itself (plain data for XCom, the log and the report).

    Reads: 3 listings (raw/, features/, pca/stats/ partitions), one features marker per retained
    features partition, one statistics marker per retained featurized batch, `_current.json`, and the manifest of a
    batch only when it must be caught up: with 365 retained batches ~731 small GETs, whatever the
    history's size. A retained raw batch before tonight with photos and no committed features is
    featurized again (a failed night, #13.4); one with committed features but no committed statistics
    gets its nightly PCA. All in date order, tonight's last, then one reexpress over the retained batches."""
    since = retained_since(batch, retention_days)

    def retained(batches: list[str]) -> list[str]:
        return [b for b in batches if since <= b <= batch]

    raw = retained(upload.raw_batches(store, root))
    listed_features = retained(upload.batch_partitions(store, lake.features_uri(root)))
    listed_stats = set(retained(upload.batch_partitions(store, lake.pca_stats_root(root))))
    markers = _read_markers(store, [lake.features_uri(root, b) for b in listed_features])
    featurized = {b: int(m.get("rows", 0)) for b, m in zip(listed_features, markers, strict=True) if m}
    stats_listed = sorted(listed_stats & set(featurized))
    stats_markers = _read_markers(store, [lake.pca_stats_uri(root, b) for b in stats_listed])
    with_stats = [b for b, m in zip(stats_listed, stats_markers, strict=True) if m]

    catch_up: dict[str, int] = {}
    for other in raw:
        if other < batch and other not in featurized:
            photos = len(upload.read_batch_manifest(store, root, other).files)
            if photos:
                catch_up[other] = photos
    tonight = {batch: images_in_batch} if images_in_batch else {}
    to_featurize = {**catch_up, **tonight}
    # A batch committed with no row (nothing readable) has nothing for the PCA: never a nightly, never re-expressed.
    with_rows = {b for b, n in featurized.items() if n > 0}
    stats_missing = [b for b in sorted(with_rows) if b < batch and b not in with_stats and b not in to_featurize]
    nightly = sorted({*to_featurize, *stats_missing})
    rows = {**featurized, **to_featurize}  # committed rows; photos (an upper bound) for what runs tonight
    current = _current_basis(store, root)
    windows, done = {}, set(with_stats)
    for night in nightly:
        done.add(night)
        windows[night] = sorted(done)
    reexpress = sorted(with_rows | set(to_featurize))
    work = {
        "batch": batch,
        "retained_since": since,
        "catch_up": sorted(catch_up),
        "catch_up_images": catch_up,
        "pca_catch_up": stats_missing,
        "featurize": sorted(to_featurize),
        "featurize_images": sum(to_featurize.values()),
        "nightly": nightly,
        "windows": windows,
        "nightly_rows": sum(rows[b] for b in nightly),
        "reexpress": reexpress if nightly else [],
        "reexpress_rows": sum(rows[b] for b in reexpress if b not in nightly) if nightly else 0,
        "rows": rows,
        "current_basis": current,
    }
    log.info("batch %s: retained since %s; catch up featurize %s, pca %s; nightly PCA for %s; reexpress over %d "
             "batches; current basis %s", batch, since, work["catch_up"] or "none", stats_missing or "none",
             nightly or "none", len(work["reexpress"]), current)
    return work


def _current_basis(store: Any, root: str) -> int | None:
    data = store.read_or_none(lake.pca_current_basis_uri(root))
    return int(json.loads(data)["version"]) if data else None


def check_plan(params: Mapping[str, Any], work: Mapping[str, Any]) -> None:
    """The Params that depend on the lake, checked before the cluster: pca_k against the rows a fit
    in this run may use, pca_mode=project against an existing basis. ValueError names the Param."""
    if not work["nightly"]:
        return
    mode = pca_mode(params, work["current_basis"])
    first = work["nightly"][0]
    if mode == steps.PCA_PROJECT and work["current_basis"] is None:
        raise ValueError("Param pca_mode=project: there is no basis to project on yet (auto fits the first one)")
    k = params.get("pca_k")
    if k is None or mode == steps.PCA_PROJECT:
        return
    first_fit_alone = mode == steps.PCA_AUTO and work["current_basis"] is None
    fit_batches = [first] if first_fit_alone else work["windows"][first]
    available = sum(work["rows"].get(b, 0) for b in fit_batches)
    if k > available:
        raise ValueError(f"Param pca_k={k}: more components than the {available} rows the first basis of this run "
                         f"may be fitted on ({', '.join(fit_batches)})")


def plan_jobs(settings: PipelineSettings, params: Mapping[str, Any], batch: str, code: Mapping[str, Any],
              work: Mapping[str, Any], *, run_name: str) -> dict[str, Any]:
    """Everything the run will execute, as plain data (XCom): per job kind (steps.JOB_KINDS) the jobs
    in the order they run, and per target either the RunJobFlow request + EMR steps or the local
    spark-submit commands. `work` is reconcile()'s answer."""
    check_plan(params, work)
    root = lake_root(settings)
    common = {"code_uri": code["code_uri"], "helper_modules": code["helper_modules"]}
    mode = pca_mode(params, work["current_basis"])
    drift = params.get("pca_drift_threshold")
    pca_options = {"mode": mode, "variance": params.get("pca_variance"), "k": params.get("pca_k"),
                   "drift_threshold": settings.drift_threshold if drift is None else drift}
    jobs = {
        steps.FEATURIZE: [(b, steps.featurize_job(
            root, b, weights=params.get("weights") or None, weights_sha256=params.get("weights_sha256") or None,
            runtime=params.get("runtime") or None, **common)) for b in work["featurize"]],
        steps.PCA: [(b, steps.pca_nightly_job(
            root, b, window=() if mode == steps.PCA_PROJECT else work["windows"][b], **pca_options, **common))
            for b in work["nightly"]],
        steps.REEXPRESS: [(batch, steps.reexpress_job(root, work["reexpress"], **common))] if work["reexpress"] else [],
    }
    plan: dict[str, Any] = {
        "batch": batch,
        "lake_root": root,
        "features_uri": lake.features_uri(root, batch),
        "reports_uri": lake.reports_uri(root, batch),
        "region": settings.region,
        "aws_conn_id": settings.aws_conn_id,
        "work": dict(work),
    }
    if settings.target == "emr":
        sizing = cluster_sizing(params)
        plan["job_flow"] = emr_cluster.build_job_flow(settings, name=run_name, code_uri=code["code_uri"], sizing=sizing)
        for kind, listed in jobs.items():
            plan[f"{kind}_steps"] = [steps.emr_step(job, batch=b) for b, job in listed]
    else:
        from fruits import local_target

        for kind, listed in jobs.items():
            plan[f"{kind}_commands"] = [local_target.command(job) for _, job in listed]
    for kind, listed in jobs.items():
        for b, job in listed:
            log.info("plan for batch %s: %s %s: %s", batch, kind, b, " ".join(job.args))
    return plan


def has_work(*, dry_run: bool, work: Mapping[str, Any], batch: str) -> bool:
    """Whether the run goes on to the cluster (the DAG's short-circuit): not on a dry run, and not
    when no batch needs featurizing (an empty night with nothing to catch up must not pay for a cluster)."""
    if dry_run:
        log.info("dry run: batch %s planned (featurize %s), no cluster started", batch, work["featurize"])
        return False
    if not work["featurize"]:
        log.info("batch %s holds no photo and no retained night is left to catch up: no cluster started", batch)
        return False
    return True


def estimate_cost(settings: PipelineSettings, params: Mapping[str, Any],
                  work: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's cost estimate, made before any cluster exists (EMR only; the local target is free),
    on what the run will read: tonight's photos and the caught-up nights', the PCA rows of every batch
    with a nightly, and with a forced refit the window's statistics and every retained batch's rows
    (their re-expression). An auto run that drifts refits too, which no plan can know beforehand."""
    if settings.target != "emr":
        return None
    from fruits import costs

    forced_refit = pca_mode(params, work["current_basis"]) == steps.PCA_REFIT
    catch_up = sum(work["catch_up_images"].values())
    reads = {"images": work["featurize_images"] - catch_up, "catchup_images": catch_up,
             "pca_rows": work["nightly_rows"], "reexpress_rows": work["reexpress_rows"] if forced_refit else 0,
             "refit_batches": len(work["windows"][work["nightly"][-1]]) if forced_refit and work["nightly"] else 0}
    estimate = costs.estimate_for_run(reads["images"], cluster_sizing(params), region=settings.region,
                                      pca_rows=reads["pca_rows"], landing_on_s3=is_s3(settings.landing),
                                      catchup_images=catch_up, reexpress_rows=reads["reexpress_rows"],
                                      refit_batches=reads["refit_batches"])
    log.info("estimated cost of batch %s: %s: %.4f USD (%.4f EUR)", work["batch"], reads,
             estimate["cost"]["total_usd"], estimate["cost"]["total_eur"])
    return {**estimate, "reads": {**reads, "featurize_batches": work["featurize"], "forced_refit": forced_refit}}


def report_cost(checked: Mapping[str, Any] | None, cluster_id: str | None, estimate: Mapping[str, Any] | None,
                work: Mapping[str, Any] | None = None, ran: bool = False) -> dict[str, Any]:
    """Write reports/batch=<ds>/run_report.json|md (fruits.run_report) for whatever ran, failed runs
    included (a failed cluster bills too); returns its headline figures."""
    from airflow.sdk.exceptions import AirflowSkipException

    from fruits import run_report

    if not checked or not work or not ran or (checked["settings"]["target"] == "emr" and not cluster_id):
        raise AirflowSkipException("nothing ran: nothing to report")
    settings, batch = PipelineSettings(**checked["settings"]), checked["batch"]
    on_emr = settings.target == "emr"
    report = run_report.report_run(
        open_lake(settings, s3_client(settings) if on_emr else None), lake_root(settings), batch,
        target=settings.target, region=settings.region, emr_client=emr_client(settings) if on_emr else None,
        cluster_id=cluster_id, estimate=estimate, landing_on_s3=is_s3(settings.landing), work=work)
    return {"cost": report["cost"], "throughput": report["throughput"],
            "report_uri": lake.reports_uri(lake_root(settings), batch) + run_report.REPORT_JSON}


# ---------------------------------------------------------------------------------------------
# The batch lock (fruits.locks): one pipeline run or one erasure of a batch at a time
# ---------------------------------------------------------------------------------------------


def lock_batch(settings: PipelineSettings, s3_client: Any | None, batch: str, owner: str) -> dict[str, Any]:
    """Take the batch's lock for this run (owner = the run id) before anything is uploaded. Held by
    another run or an erasure: ValueError naming the holder, so the task fails at once."""
    from fruits import locks

    try:
        return locks.acquire(open_lake(settings, s3_client), lake_root(settings), batch, owner=owner,
                             ttl_seconds=LOCK_TTL_SECONDS)
    except locks.BatchLocked as error:
        raise ValueError(f"batch {batch} is locked, this run ({owner}) stops before touching it: {error}") from None


def unlock_batch(settings: PipelineSettings, s3_client: Any | None, batch: str, owner: str) -> bool:
    """Release the lock if this run holds it (a run stopped by another's lock releases nothing)."""
    from fruits import locks

    released = locks.release(open_lake(settings, s3_client), lake_root(settings), batch, owner)
    log.info("lock of batch %s %s by %s", batch, "released" if released else "not held", owner)
    return released


def fail_run(upstream: str = "an upstream task") -> None:
    """The final check's body: it only runs when something failed (trigger rule ONE_FAILED)."""
    raise RuntimeError(f"{upstream} failed: the cluster was torn down, the run is failed")
