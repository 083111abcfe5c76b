"""The DAG's task bodies as plain functions: the DAG file only wires them. Airflow and its amazon
provider are imported only inside the few helpers that need them (clients from the `aws_default`
connection, fail-now/skip signals), so everything else is testable as plain Python.

Run-time flow: `start_run` (settings from Variables, the Params parsed once into a RunParams, then
`guard`: GDPR, before any other AWS call) -> `lock_batch` -> `list_landing` (the listing the cluster's ingest
job reads, the code) -> `plan_run`
(`reconcile`: what the lake says is left to do, nights to catch up, the PCA window; the weights and the
node wheelhouse the cluster needs; `plan_jobs`: cluster request, step and local commands, all from
`fruits.steps` / `fruits.emr_cluster`; the estimate) -> ... -> `report_cost` -> `unlock_batch`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fruits import emr_cluster, gdpr, lake, preflight, release, retention, run_params, steps, storage, upload
from fruits.run_params import RunParams
from fruits.settings import PipelineSettings, load_settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The most small GETs (commit markers) the plan has in flight at once.
READ_CONCURRENCY = 16
# A run holds its batch's lock from before the upload to after the teardown: longer than any run
# (4 job kinds x the 3 h step timeout + cluster start), short enough to free a crashed run's.
LOCK_TTL_SECONDS = 14 * 3600


def s3_client(settings: PipelineSettings) -> Any:
    """The Airflow side's S3 client; every call on the lake bucket carries ExpectedBucketOwner."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    client = S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).get_conn()
    return gdpr.expect_bucket_owner(client, settings.bucket, settings.bucket_owner)


def emr_client(settings: PipelineSettings) -> Any:
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    return EmrHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).conn


def aws_client(settings: PipelineSettings, service: str) -> Any:
    """Any boto3 client from the `aws_default` connection, in the settings' region (the preflight's)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=settings.aws_conn_id, client_type=service, region_name=settings.region).get_conn()


def lake_client(settings: PipelineSettings) -> Any | None:
    """The S3 client the lake and landing need: none for a local lake with a local landing."""
    return s3_client(settings) if settings.target == "emr" or is_s3(settings.landing) else None


@contextmanager
def config_errors_fail_now():
    """A ValueError (GdprViolation, a bad Variable or Param) fails the task at once: retrying cannot fix it."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except ValueError as error:
        raise AirflowFailException(f"{type(error).__name__}: {error}") from error


@dataclasses.dataclass(frozen=True)
class Run:
    """What the first task established (settings + parsed Params); travels by XCom as `as_xcom()`."""

    settings: PipelineSettings
    params: RunParams

    @property
    def batch(self) -> str:
        return self.params.batch

    def as_xcom(self) -> dict[str, Any]:
        return {"settings": self.settings.as_dict(), "params": self.params.as_dict()}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Run:
        return cls(PipelineSettings(**data["settings"]), RunParams.from_dict(data["params"]))


def start_run(
    get_variable: Callable[[str, Any], Any], raw_params: Mapping[str, Any], *, night: str | None, target: str
) -> Run:
    """The run's settings (Variables; `target` is the DAG's) and its Params parsed once (ValueError naming
    a bad one); `night` is the run's partition key. A `landing` Param replaces the Variable: it names this
    batch's folder."""
    settings = load_settings(get_variable, target=target)
    params = run_params.parse(raw_params, night=night, settings=settings)
    if params.landing:
        settings = dataclasses.replace(settings, landing=params.landing)
    return Run(settings, params)


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
    return storage.file_uri(local if local.is_absolute() else REPO_ROOT / local)


def open_lake(settings: PipelineSettings, s3_client: Any | None) -> storage.Store:
    if settings.target == "emr":
        return storage.S3Store(s3_client, settings.bucket, settings.kms_key_arn)
    return storage.LocalStore(lake_root(settings))


def open_landing(
    settings: PipelineSettings, s3_client: Any | None, batch: str, *, explicit: bool = False
) -> tuple[storage.Store, str]:
    """The batch's landing folder: `<fruits_landing>/<batch>/` (lake.landing_uri: a backfill takes its own
    date's photos only), or, with `explicit` (the run's `landing` Param), the folder the Param names."""
    if not settings.landing:
        raise ValueError("no landing location: set the Variable fruits_landing or the run's 'landing' Param")
    folder = settings.landing if explicit else lake.landing_uri(settings.landing, batch)
    if is_s3(folder):
        return storage.S3Store(s3_client, gdpr.s3_bucket_of(folder)), folder.rstrip("/") + "/"
    path = Path(folder)
    path = path if path.is_absolute() else REPO_ROOT / path
    if not path.is_dir():
        if explicit:
            raise FileNotFoundError(f"landing folder {path} does not exist")
        log.warning("landing folder %s does not exist: no photos for batch %s", path, batch)
    return storage.LocalStore(path), storage.file_uri(path) + "/"


def list_landing(
    settings: PipelineSettings,
    s3_client: Any | None,
    batch: str,
    *,
    dry_run: bool,
    repo_root: Path = REPO_ROOT,
    explicit_landing: bool = False,
) -> dict[str, Any]:
    """The list_landing task: the night's landing listed (metadata only, fruits.upload.write_listing) into the
    listing the cluster's ingest job reads, and the code the steps run published. Only a landing the cluster
    cannot read (a folder, on the EMR target) has its bytes copied up (staged), never decoded.
    `explicit_landing`: the run's `landing` Param named the folder (else the dated folder of `batch`)."""
    lake_store = open_lake(settings, s3_client)
    landing_store, landing_uri = open_landing(settings, s3_client, batch, explicit=explicit_landing)
    stage = settings.target == "emr" and not is_s3(landing_uri)
    if stage and settings.landing_after != "keep":
        raise ValueError(
            f"fruits_landing_after={settings.landing_after} needs a landing the cluster reaches: {landing_uri} is "
            "outside S3 (its photos are staged into the lake); set fruits_landing_after=keep or land in S3"
        )
    listed = upload.write_listing(
        lake_store,
        landing_store,
        landing_uri,
        batch,
        max_photo_bytes=int(settings.max_photo_bytes),
        stage=stage,
        dry_run=dry_run,
    )
    code = release.publish_code(lake_store, repo_root, dry_run=dry_run)
    return {"landing": listed, "code": code}


# ---------------------------------------------------------------------------------------------
# What the lake says is left to do (before any cluster exists)
# ---------------------------------------------------------------------------------------------


def sweep_retention(
    settings: PipelineSettings, s3_client: Any | None, batch: str, *, dry_run: bool, owner: str
) -> dict[str, Any]:
    """Delete the batches that left retention since the last sweep, by batch date, then the originals past
    their shorter window (fruits.retention)."""
    store = open_lake(settings, s3_client)
    root = lake_root(settings)
    report = retention.sweep_expired(
        store,
        root,
        batch,
        settings.retention_days,
        owner=owner,
        dry_run=dry_run,
        max_batches=settings.retention_max_batches,
    )
    originals = retention.sweep_originals(
        store, root, batch, settings.original_retention_days, owner=owner, dry_run=dry_run
    )
    return {**report, "originals": originals}


def remove_originals(
    settings: PipelineSettings, s3_client: Any | None, work: Mapping[str, Any] | None, *, dry_run: bool, owner: str
) -> dict[str, Any]:
    """The remove_originals teardown: with fruits_original_retention_days 0, the originals of the batches this
    run featurized go once their committed features cover them (fruits.retention); with a window, the nightly
    sweep removes them later. A run that planned nothing (failed before its plan, or an empty night) has none."""
    batches = list((work or {}).get("featurize", []))
    if settings.original_retention_days or not batches:
        log.info(
            "originals kept: %s",
            f"{settings.original_retention_days} day(s) (fruits_original_retention_days)"
            if settings.original_retention_days
            else "this run featurized no batch",
        )
        return {"removed": {}, "waiting": [], "locked": [], "objects_deleted": 0, "dry_run": dry_run}
    return retention.remove_featurized_originals(
        open_lake(settings, s3_client), lake_root(settings), batches, owner=owner, dry_run=dry_run
    )


def _read_markers(store: Any, uris: Sequence[str]) -> list[dict[str, Any] | None]:
    """Commit markers, READ_CONCURRENCY GETs in flight (365 retained batches: 23 rounds, not 365)."""
    if not uris:
        return []
    with ThreadPoolExecutor(max_workers=min(READ_CONCURRENCY, len(uris))) as pool:
        return list(pool.map(lambda uri: lake.read_commit(store, uri), uris))


def reconcile(store: Any, root: str, batch: str, *, landing_files: int, retention_days: int) -> dict[str, Any]:
    """What tonight's run must do, from the lake itself (plain data for XCom, the log and the report).

    Reads: 3 listings (raw/, features/, pca/stats/ partitions), one features marker per retained
    features partition, one statistics marker per retained featurized batch, `_current.json`, and the manifest of a
    batch only when it must be caught up: with 365 retained batches ~731 small GETs, whatever the
    history's size. A retained raw batch before tonight with photos and no committed features is
    featurized again (a failed night, #13.4); one with committed features but no committed statistics
    gets its nightly PCA. All in date order, tonight's last, then one reexpress over the retained batches.
    Tonight is ingested and featurized when its landing lists a file (`landing_files`: each gets its outcome)
    or its batch holds photos already (a rerun); its rows are estimated as the larger of the two (the landing
    is kept by default: a rerun lists again the photos its batch holds).
    (A batch's originals outlive their short window until its features are committed: fruits.retention.)"""
    since = retention.oldest_retained(batch, retention_days)

    def retained(batches: list[str]) -> list[str]:
        return [b for b in batches if since <= b <= batch]

    raw = retained(storage.raw_batches(store, root))
    listed_features = retained(storage.batch_partitions(store, lake.features_uri(root)))
    listed_stats = set(retained(storage.batch_partitions(store, lake.pca_stats_root(root))))
    markers = _read_markers(store, [lake.features_uri(root, b) for b in listed_features])
    featurized = {b: int(m.get("rows", 0)) for b, m in zip(listed_features, markers, strict=True) if m}
    stats_listed = sorted(listed_stats & set(featurized))
    stats_markers = _read_markers(store, [lake.pca_stats_uri(root, b) for b in stats_listed])
    with_stats = [b for b, m in zip(stats_listed, stats_markers, strict=True) if m]

    catch_up: dict[str, int] = {}
    for other in raw:
        if other < batch and other not in featurized:
            photos = storage.manifest_photo_count(store, root, other)
            if photos:
                catch_up[other] = photos
    in_batch = storage.manifest_photo_count(store, root, batch)
    tonight = {batch: max(in_batch, landing_files)} if in_batch or landing_files else {}
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
    log.info(
        "batch %s: retained since %s; catch up featurize %s, pca %s; nightly PCA for %s; reexpress over %d "
        "batches; current basis %s",
        batch,
        since,
        work["catch_up"] or "none",
        stats_missing or "none",
        nightly or "none",
        len(work["reexpress"]),
        current,
    )
    return work


def _current_basis(store: Any, root: str) -> int | None:
    data = store.read_or_none(lake.pca_current_basis_uri(root))
    return int(json.loads(data)["version"]) if data else None


def check_plan(params: RunParams, work: Mapping[str, Any]) -> None:
    """The Params that depend on the lake, checked before the cluster: pca_k against the rows a fit
    in this run may use, pca_mode=project against an existing basis. ValueError names the Param."""
    if not work["nightly"]:
        return
    mode = params.mode_for(work["current_basis"])
    first = work["nightly"][0]
    if mode == steps.PCA_PROJECT and work["current_basis"] is None:
        raise ValueError("Param pca_mode=project: there is no basis to project on yet (auto fits the first one)")
    k = params.pca_k
    if k is None or mode == steps.PCA_PROJECT:
        return
    first_fit_alone = mode == steps.PCA_AUTO and work["current_basis"] is None
    fit_batches = [first] if first_fit_alone else work["windows"][first]
    available = sum(work["rows"].get(b, 0) for b in fit_batches)
    if k > available:
        raise ValueError(
            f"Param pca_k={k}: more components than the {available} rows the first basis of this run "
            f"may be fitted on ({', '.join(fit_batches)})"
        )


def featurize_weights(settings: PipelineSettings, params: RunParams, lake_store: Any) -> dict[str, str | None]:
    """featurize's weights: the Param's, else the lake's models/ copy with its recorded sha256
    (fruits.release.default_weights). On EMR that copy must exist (FileNotFoundError: the plan fails,
    no cluster); the local target without it uses the job's own default (Keras' cache)."""
    if params.weights:
        return {"weights": params.weights, "weights_sha256": params.weights_sha256}
    try:
        return release.default_weights(lake_store, lake_root(settings))
    except FileNotFoundError:
        if settings.target == "emr":
            raise
        return {"weights": None, "weights_sha256": None}


def plan_jobs(
    settings: PipelineSettings,
    params: RunParams,
    code: Mapping[str, Any],
    work: Mapping[str, Any],
    *,
    run_name: str,
    weights: Mapping[str, str | None] | None = None,
    listing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the run will execute, as plain data (XCom): per job kind (steps.JOB_KINDS) the jobs
    in the order they run, and per target either the RunJobFlow request + EMR steps or the local
    spark-submit commands. `work` is reconcile()'s answer; `weights` featurize_weights()'; `listing`
    list_landing()'s (no listing, as on a dry run: no ingest job)."""
    from fruits import approval

    check_plan(params, work)
    batch, root = params.batch, lake_root(settings)
    common = {"code_uri": code["code_uri"], "helper_modules": code["helper_modules"]}
    mode = approval.effective_mode(settings, params, work["current_basis"])
    drift = params.pca_drift_threshold
    pca_options = {
        "mode": mode,
        "variance": params.pca_variance,
        "k": params.pca_k,
        "drift_threshold": settings.drift_threshold if drift is None else drift,
    }
    weights = weights or {"weights": params.weights, "weights_sha256": params.weights_sha256}
    keep = settings.keep_originals  # the decoded photos' bytes in raw/: ingest writes them, featurize reads around
    ingest = (
        steps.ingest_job(
            root,
            batch,
            listing=listing["listing"],
            landing=listing["landing"],
            retention_days=settings.retention_days,
            max_photo_bytes=int(settings.max_photo_bytes),
            landing_after=settings.landing_after,
            keep_originals=keep,
            **common,
        )
        if listing and listing.get("listing")
        else None
    )
    jobs = {
        steps.INGEST: [(batch, ingest)] if ingest else [],
        steps.FEATURIZE: [
            (b, steps.featurize_job(root, b, **weights, runtime=params.runtime, keep_originals=keep, **common))
            for b in work["featurize"]
        ],
        steps.PCA: [
            (
                b,
                steps.pca_nightly_job(
                    root, b, window=() if mode == steps.PCA_PROJECT else work["windows"][b], **pca_options, **common
                ),
            )
            for b in work["nightly"]
        ],
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
        plan["job_flow"] = emr_cluster.build_job_flow(
            settings, name=run_name, code_uri=code["code_uri"], sizing=params.sizing
        )
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


def plan_run(
    run: Run,
    s3_client: Any | None,
    listed: Mapping[str, Any],
    *,
    run_name: str,
    repo_root: Path = REPO_ROOT,
    client: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """The plan_jobs task: on EMR the account's subnets and vCPU quotas first (fruits.preflight, dry runs
    included; `client(service)` gives a boto3 client, default the aws_default connection's), reconcile,
    then (when a job will run on EMR) the node wheelhouse and the weights must be in the lake, then the
    plan, its estimate and whether the cluster starts. On EMR the cluster grows with tonight's landing
    (emr_cluster.sized_for_night: the sizing Params are the fewest nodes). Every refusal here (ValueError,
    FileNotFoundError) comes before any cluster exists."""
    settings, params = run.settings, run.params
    if settings.target == "emr":
        landing = listed["landing"]
        sized = emr_cluster.sized_for_night(
            params.sizing, landing["bytes"], landing["candidates"], settings.keep_originals
        )
        if sized != params.sizing:
            log.info(
                "tonight's landing holds %.1f GB: %d task nodes instead of %d",
                listed["landing"]["bytes"] / 1e9,
                sized.task_count,
                params.sizing.task_count,
            )
            params = dataclasses.replace(params, sizing=sized)
            run = dataclasses.replace(run, params=params)
        checked = preflight.check_account(settings, params.sizing, client or (lambda name: aws_client(settings, name)))
        log.info("account ready for the cluster: %s", checked)
    lake_store = open_lake(settings, s3_client)
    work = reconcile(
        lake_store,
        lake_root(settings),
        run.batch,
        retention_days=settings.retention_days,
        landing_files=listed["landing"]["files"],
    )
    weights = None
    if work["featurize"]:
        if settings.target == "emr":  # the nodes install from the lake only: no wheelhouse, no cluster
            release.require_wheelhouse(lake_store, lake_root(settings), repo_root)
        weights = featurize_weights(settings, params, lake_store)
    plan = plan_jobs(
        settings, params, listed["code"], work, run_name=run_name, weights=weights, listing=listed["landing"]
    )
    from fruits import approval

    drift = approval.last_drift(lake_store, lake_root(settings), work) if settings.basis_approval_required else None
    run_jobs = has_work(dry_run=params.dry_run, work=work, batch=run.batch)
    if not run_jobs and listed["landing"]["listing"]:  # no job will read it: an empty night leaves nothing
        lake_store.delete(listed["landing"]["listing"])
    return {
        **plan,
        "basis_approval": approval.request(settings, params, work, drift),
        "estimate": estimate_cost(settings, params, work),
        "run_jobs": run_jobs,
    }


def estimate_cost(settings: PipelineSettings, params: RunParams, work: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's cost estimate, made before any cluster exists (EMR only; the local target is free),
    on what the run will read: tonight's photos and the caught-up nights', the PCA rows of every batch
    with a nightly, and with a forced refit the window's statistics and every retained batch's rows
    (their re-expression). An auto run that drifts refits too, which no plan can know beforehand."""
    if settings.target != "emr":
        return None
    from fruits import costs

    forced_refit = params.mode_for(work["current_basis"]) == steps.PCA_REFIT
    catch_up = sum(work["catch_up_images"].values())
    reads = {
        "images": work["featurize_images"] - catch_up,
        "catchup_images": catch_up,
        "pca_rows": work["nightly_rows"],
        "reexpress_rows": work["reexpress_rows"] if forced_refit else 0,
        "refit_batches": len(work["windows"][work["nightly"][-1]]) if forced_refit and work["nightly"] else 0,
    }
    estimate = costs.estimate_for_run(
        images=reads["images"],
        sizing=params.sizing,
        region=settings.region,
        pca_rows=reads["pca_rows"],
        landing_on_s3=is_s3(settings.landing),
        catchup_images=catch_up,
        reexpress_rows=reads["reexpress_rows"],
        refit_batches=reads["refit_batches"],
    )
    log.info(
        "estimated cost of batch %s: %s: %.4f USD (%.4f EUR)",
        work["batch"],
        reads,
        estimate["cost"]["total_usd"],
        estimate["cost"]["total_eur"],
    )
    return {**estimate, "reads": {**reads, "featurize_batches": work["featurize"], "forced_refit": forced_refit}}


def airflow_run_stamp(ti: Any, dag_run: Any) -> dict[str, Any]:
    """The DAG run and the DAG version its tasks ran with (the UI's "Dag Version" of the run), for its report."""
    bundle = getattr(ti, "bundle_instance", None)
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "partition_key": getattr(dag_run, "partition_key", None),
        "dag_version_id": str(ti.dag_version_id),
        "bundle_version": getattr(bundle, "version", None),
    }


def report_cost(
    run: Run,
    cluster_id: str | None,
    estimate: Mapping[str, Any] | None,
    work: Mapping[str, Any] | None = None,
    ran: bool = False,
    airflow_run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write reports/batch=<ds>/run_report.json|md (fruits.run_report) for whatever ran, failed runs
    included (a failed cluster bills too); returns its headline figures."""
    from airflow.sdk.exceptions import AirflowSkipException

    from fruits import run_report

    if not work or not ran or (run.settings.target == "emr" and not cluster_id):
        raise AirflowSkipException("nothing ran: nothing to report")
    settings, batch = run.settings, run.batch
    on_emr = settings.target == "emr"
    report = run_report.report_run(
        open_lake(settings, s3_client(settings) if on_emr else None),
        lake_root(settings),
        batch,
        target=settings.target,
        region=settings.region,
        emr_client=emr_client(settings) if on_emr else None,
        cluster_id=cluster_id,
        estimate=estimate,
        landing_on_s3=is_s3(settings.landing),
        work=work,
        airflow_run=airflow_run,
    )
    return {
        "cost": report["cost"],
        "throughput": report["throughput"],
        "report_uri": lake.reports_uri(lake_root(settings), batch) + run_report.REPORT_JSON,
    }


# ---------------------------------------------------------------------------------------------
# The batch lock (fruits.locks): one pipeline run or one erasure of a batch at a time
# ---------------------------------------------------------------------------------------------


def lock_batch(settings: PipelineSettings, s3_client: Any | None, batch: str, owner: str) -> dict[str, Any]:
    """Take the batch's lock for this run (owner = the run id) before anything is uploaded. Held by
    another run or an erasure: ValueError naming the holder, so the task fails at once."""
    from fruits import locks

    try:
        return locks.acquire(
            open_lake(settings, s3_client), lake_root(settings), batch, owner=owner, ttl_seconds=LOCK_TTL_SECONDS
        )
    except locks.BatchLocked as error:
        raise ValueError(f"batch {batch} is locked, this run ({owner}) stops before touching it: {error}") from None


def unlock_batch(settings: PipelineSettings, s3_client: Any | None, batch: str, owner: str) -> bool:
    """Release the lock if this run holds it (a run stopped by another's lock releases nothing)."""
    from fruits import locks

    released = locks.release(open_lake(settings, s3_client), lake_root(settings), batch, owner)
    log.info("lock of batch %s %s by %s", batch, "released" if released else "not held", owner)
    return released
