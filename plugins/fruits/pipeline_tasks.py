"""The DAG's task bodies as plain functions: the DAG file only wires them. Airflow and its amazon
provider are imported only inside the few helpers that need them (clients from the `aws_default`
connection, fail-now/skip signals), so everything else is testable as plain Python.

Run-time flow: `resolve_settings` (Variables + the run's Params) -> `guard` (GDPR, before any
other AWS call) -> `upload` (images + code) -> `plan_jobs` (cluster request, step and local
commands, all from `fruits.steps` / `fruits.emr_cluster`).
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from fruits import emr_cluster, gdpr, lake, steps, upload
from fruits.settings import PipelineSettings, load_settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("emr", "local")

# Params that override a PipelineSettings field of the same name for one run.
SETTINGS_PARAMS = ("landing",)


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
    return lake.check_batch(params.get("batch") or ds)


def resolve_settings(get_variable: Callable[[str, Any], Any], params: Mapping[str, Any], target: str) -> PipelineSettings:
    """Settings from Variables, this run's Params on top. `target` is the DAG's parse-time target:
    a `fruits_target` Variable saying otherwise is a configuration error, not something to guess."""
    overrides = {name: params.get(name) or None for name in SETTINGS_PARAMS}
    settings = load_settings(get_variable, **overrides)
    if settings.target != target and get_variable("fruits_target", None) not in (None, ""):
        raise ValueError(
            f"Variable fruits_target={settings.target!r} but this DAG was parsed for target {target!r} "
            "(env FRUITS_TARGET): set both the same"
        )
    return dataclasses.replace(settings, target=target)


def is_s3(uri: str) -> bool:
    return urlparse(uri or "").scheme == "s3"


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
                 repo_root: Path = REPO_ROOT, explicit_landing: bool = False, landing_after: str = "keep",
                 max_photo_bytes: int = upload.MAX_PHOTO_BYTES) -> dict[str, Any]:
    """`explicit_landing`: the run's `landing` Param named the folder (else the dated folder of `batch`)."""
    lake_store = open_lake(settings, s3_client)
    landing_store, landing_uri = open_landing(settings, s3_client, batch, explicit=explicit_landing)
    images = upload.upload_new_images(lake_store, landing_store, landing_uri, batch, dry_run=dry_run,
                                      landing_after=landing_after, max_photo_bytes=max_photo_bytes)
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


_BATCH_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def param_specs(target: str) -> dict[str, dict[str, Any]]:
    """The run's typed Params (UI form for manual triggers; scheduled runs and backfills take the
    defaults). Each value is `Param(**spec)` in the DAG file."""
    optional_batch = {"type": ["null", "string"], "pattern": _BATCH_PATTERN}
    specs: dict[str, dict[str, Any]] = {
        "batch": {"default": None, **optional_batch,
                  "description": "Batch id (YYYY-MM-DD); empty: the run's logical date."},
        "landing": {"default": None, "type": ["null", "string"],
                    "description": "Where the new photos are (folder or s3:// prefix); empty: Variable fruits_landing."},
        "pca_mode": {"default": steps.PCA_REFIT, "type": "string", "enum": list(steps.PCA_MODES),
                     "description": "refit: fit PCA on every batch up to this one (default); "
                                    "project: project this batch with the model saved by pca_model_batch."},
        "pca_variance": {"default": 0.95, "type": "number", "exclusiveMinimum": 0, "maximum": 1,
                         "description": "Keep the fewest components explaining this share of variance."},
        "pca_k": {"default": None, "type": ["null", "integer"], "minimum": 1,
                  "description": "Fixed number of components (wins over pca_variance)."},
        "pca_model_batch": {"default": None, **optional_batch,
                            "description": "project mode: the batch whose saved PCA model to reuse."},
        "weights": {"default": None, "type": ["null", "string"],
                    "description": "URI of the MobileNetV2 no-top weights; empty: the job's default."},
        "runtime": {"default": None, "type": ["null", "string"], "enum": [None, "litert", "keras"],
                    "description": "Inference runtime of featurize; empty: the job's default."},
        "dry_run": {"default": False, "type": "boolean",
                    "description": "Check, count the new photos and plan the jobs; upload and run nothing."},
    }
    if target == "emr":
        specs.update(sizing_param_specs())
    return specs


def plan_jobs(settings: PipelineSettings, params: Mapping[str, Any], batch: str, code: Mapping[str, Any],
              feature_batches: list[str], *, run_name: str) -> dict[str, Any]:
    """Everything the run will execute, as plain data (XCom): the two jobs, and per target either
    the RunJobFlow request + EMR steps or the local spark-submit commands."""
    root = lake_root(settings)
    common = dict(code_uri=code["code_uri"], helper_modules=code["helper_modules"])
    featurize = steps.featurize_job(
        root, batch, weights=params.get("weights") or None, runtime=params.get("runtime") or None, **common
    )
    pca = steps.pca_job(
        root, batch, mode=params.get("pca_mode") or steps.PCA_REFIT, existing_batches=feature_batches,
        variance=params.get("pca_variance"), k=params.get("pca_k"), model_batch=params.get("pca_model_batch"),
        **common,
    )
    plan: dict[str, Any] = {
        "batch": batch,
        "lake_root": root,
        "features_uri": lake.features_uri(root, batch),
        "pca_uri": lake.pca_uri(root, batch),
        "reports_uri": lake.reports_uri(root, batch),
        "region": settings.region,
        "aws_conn_id": settings.aws_conn_id,
    }
    if settings.target == "emr":
        sizing = cluster_sizing(params)
        plan["job_flow"] = emr_cluster.build_job_flow(settings, name=run_name, code_uri=code["code_uri"], sizing=sizing)
        plan["featurize_steps"] = [steps.emr_step(featurize, batch=batch)]
        plan["pca_steps"] = [steps.emr_step(pca, batch=batch)]
    else:
        from fruits import local_target

        plan["featurize_command"] = local_target.command(featurize)
        plan["pca_command"] = local_target.command(pca)
    log.info("plan for batch %s: featurize %s; pca %s", batch, " ".join(featurize.args), " ".join(pca.args))
    return plan


def has_work(*, dry_run: bool, images_in_batch: int, batch: str) -> bool:
    """Whether the run goes on to the cluster (the DAG's short-circuit): not on a dry run, and not
    when the batch holds no photo (an empty night must not pay for a cluster that featurizes nothing)."""
    if dry_run:
        log.info("dry run: batch %s planned (%d photos), no cluster started", batch, images_in_batch)
        return False
    if images_in_batch == 0:
        log.info("batch %s holds no photo: nothing to featurize, no cluster started", batch)
        return False
    return True


def estimate_cost(settings: PipelineSettings, params: Mapping[str, Any], images: int, pca_rows: int | None) -> dict[str, Any] | None:
    """The run's cost estimate, made before any cluster exists (EMR only; the local target is free)."""
    if settings.target != "emr":
        return None
    from fruits import costs

    estimate = costs.estimate_for_run(images, cluster_sizing(params), region=settings.region, pca_rows=pca_rows,
                                      landing_on_s3=is_s3(settings.landing))
    log.info("estimated cost of batch with %d images: %.4f USD (%.4f EUR)", images,
             estimate["cost"]["total_usd"], estimate["cost"]["total_eur"])
    return estimate


def report_cost(checked: Mapping[str, Any] | None, cluster_id: str | None,
                estimate: Mapping[str, Any] | None) -> dict[str, Any]:
    """Write reports/batch=<ds>/run_report.json|md (fruits.run_report) for whatever ran, failed runs
    included (a failed cluster bills too); returns its headline figures."""
    from airflow.sdk.exceptions import AirflowSkipException

    from fruits import run_report

    if not checked or (checked["settings"]["target"] == "emr" and not cluster_id):
        raise AirflowSkipException("nothing ran: nothing to report")
    settings, batch = PipelineSettings(**checked["settings"]), checked["batch"]
    on_emr = settings.target == "emr"
    report = run_report.report_run(
        open_lake(settings, s3_client(settings) if on_emr else None), lake_root(settings), batch,
        target=settings.target, region=settings.region, emr_client=emr_client(settings) if on_emr else None,
        cluster_id=cluster_id, estimate=estimate, landing_on_s3=is_s3(settings.landing))
    return {"cost": report["cost"], "throughput": report["throughput"],
            "report_uri": lake.reports_uri(lake_root(settings), batch) + run_report.REPORT_JSON}


def feature_batches(settings: PipelineSettings, s3_client: Any | None) -> list[str]:
    """Batches that already have features (what a PCA refit reads besides this batch)."""
    return upload.batch_partitions(open_lake(settings, s3_client), lake.features_uri(lake_root(settings)))


def fail_run(upstream: str = "an upstream task") -> None:
    """The final check's body: it only runs when something failed (trigger rule ONE_FAILED)."""
    raise RuntimeError(f"{upstream} failed: the cluster was torn down, the run is failed")
