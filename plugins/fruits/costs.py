"""What a run costs, as AWS bills it: the run-time cost model (the estimate before a run, the bill after it).

`estimate_for_run` / `estimate_emr` price a night from an image count, the measured featurize and PCA rates per
vCPU and a `ClusterSizing`; `fruits.run_report` applies the same billing functions to what EMR says ran;
`steady_state_month` is the whole month once retention is full. The comparisons and the year's bill behind
docs/costs.md are `fruits.cost_compare`, the prices refresh `fruits.price_refresh`, the command
`python -m fruits.cli.costs`.

Billing rules modelled (the AWS price pages' own):
- EC2: per second, 60 s minimum per instance; primary and core fleet On-Demand (the core nodes host the
  driver), the task fleet on spot when sizing.spot: the region's sampled spot price (`refresh --spot`), else
  On-Demand less the file's stamped typical spot discount;
- EMR: the per-instance-hour uplift, per second with the same 60 s minimum, never discounted on spot;
- EBS gp3: GB-month prorated per second over a 30-day month (the EBS price page's examples);
- S3: PUT/COPY/POST/LIST and GET/HEAD per 1,000 requests, following the lake's layout and the jobs' own
  requests (`s3_requests`: photos in Parquet bundles sized by `fruits.storage`'s constants, a landing read by
  binaryFile, every file the cluster writes a multipart upload, featurize's one output file per input split);
  storage per area in the class the lifecycle moves it to (`STORAGE_PLAN`, the source of infra/foundation.yaml's
  transitions), day by day over its stay, with lifecycle transitions and Intelligent-Tiering monitoring;
- time: each step the longer of its CPU work (the measured rates per vCPU) and its S3 bytes over the workers'
  baseline bandwidth (`job_seconds`), + EMR's fixed overheads;
- fixed: the KMS key, the Airflow host and its public IPv4 address, the cluster's network path (S3 gateway
  endpoint, or a NAT gateway), the interface endpoints (`INTERFACE_ENDPOINTS`: per AZ-hour + per GB).

Prices come from `prices/aws_eu.json` (stamped with date and source). Instance vCPUs/memory come from
`fruits.emr_cluster.INSTANCE_TYPES`. Regions must be in the GDPR allow-list (`fruits.gdpr.check_region`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ingest  # the ingest job's own bundle rule (spark_jobs/ is on sys.path, as for featurize)

from featurize import MAX_SPLIT_BYTES, PIXELS_BYTES

# The bundle constants size the objects the requests are counted on (fruits.storage's for the worker's upload, the
# ingest job's own for the cluster's): read at call time, never copied.
from fruits import storage
from fruits.emr_cluster import INSTANCE_TYPES, ClusterSizing, InstanceFacts, sized_for_night, worker_vcpus
from fruits.gdpr import check_region

log = logging.getLogger(__name__)

PRICES_FILE = Path(__file__).resolve().parent / "prices" / "aws_eu.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Written by benchmarks/inference_throughput.py (featurize end to end, images/s per vCPU).
THROUGHPUT_FILE = REPO_ROOT / "benchmarks" / "results" / "inference_throughput.json"
# Written by the PCA benchmark (statistics and projection rows/s per vCPU); read like featurize's.
PCA_THROUGHPUT_FILE = REPO_ROOT / "benchmarks" / "results" / "pca_throughput.json"
# Written by benchmarks/photo_classes.py: per photo class (thumbnail, 12-MP JPEG, HEIC), featurize and ingest rates
# measured side by side and the mean bytes (original, stripped, derivative); `photo_mix` reads it.
PHOTO_CLASSES_FILE = REPO_ROOT / "benchmarks" / "results" / "photo_classes.json"
# The nights the cost model prices by photo class: the app's phones (issue 22: 70 % 12-MP JPEG, 30 % HEIC) and today's
# Fruits-360 thumbnails.
PHOTO_MIXES = {"phone": {"jpeg12": 0.7, "heic": 0.3}, "thumbnail": {"thumbnail": 1.0}}
# A photo waits on an s3:// landing from its upload (during the day) until the night ingests and deletes it
# (fruits_landing_after=delete): a day at most, half a day on average.
LANDING_DAYS = 0.5
# Used only while that benchmark has not been run on this checkout; every output names its source.
FALLBACK_THROUGHPUT_PER_VCPU = 20.0
FALLBACK_THROUGHPUT_SOURCE = (
    "FALLBACK ASSUMPTION (no benchmarks/results/inference_throughput.json yet): 20 images/s/vCPU"
)

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
# The EBS price page prorates GB-month over a 30-day month in its examples.
SECONDS_PER_MONTH = 30 * 86400.0
# EC2 and EMR both bill per second with a one-minute minimum per instance.
BILLING_MINIMUM_SECONDS = 60.0
# EMR 6.10+ gives every instance a 15 GiB gp3 root volume when EbsRootVolumeSize is not set.
EMR_ROOT_VOLUME_GIB = 15
# EMR's NormalizedInstanceHours: units per instance-hour by size (EMR management guide, "normalized
# instance hours"; the EC2 size normalization factors). Each instance's hours are rounded UP.
NORMALIZATION_FACTORS = {
    "nano": 0.25,
    "micro": 0.5,
    "small": 1,
    "medium": 2,
    "large": 4,
    "xlarge": 8,
    "2xlarge": 16,
    "3xlarge": 24,
    "4xlarge": 32,
    "6xlarge": 48,
    "8xlarge": 64,
    "9xlarge": 72,
    "10xlarge": 80,
    "12xlarge": 96,
    "16xlarge": 128,
    "18xlarge": 144,
    "24xlarge": 192,
    "32xlarge": 256,
    "48xlarge": 384,
}
ON_DEMAND, SPOT = "ON_DEMAND", "SPOT"
# The lake's retention (infra/foundation.yaml's ImageRetentionDays, LogRetentionDays and
# NoncurrentVersionExpiryDays defaults; tests/test_costs.py keeps them equal): an expired object stays a
# noncurrent version for the grace, then is purged.
RETENTION_DAYS = 365
LOG_RETENTION_DAYS = 90
NONCURRENT_GRACE_DAYS = 30
# A billing month: a year's 365 days over 12 (S3 bills the month's average GB); one batch a night.
DAYS_PER_MONTH = 365 / 12
HOURS_PER_MONTH = 730.0
# The PCA's sufficient statistics of one batch: n, column sums and X'X in float64 over 1280 features.
FEATURE_DIM = 1280
STATS_BYTES_PER_BATCH = 8 * (1 + FEATURE_DIM + FEATURE_DIM * FEATURE_DIM)
# A refit reads the stored statistics on the driver (one S3 stream, assumed 100 MB/s, not measured) and
# decomposes one 1280 x 1280 matrix (about a second).
STATS_READ_BYTES_PER_S = 100e6
EIGEN_SECONDS = 1.0
# S3 storage classes, and what the lifecycle may move: objects under 128 KiB are billed as 128 KiB in
# Glacier Instant Retrieval and never monitored by Intelligent-Tiering, so the rules skip them.
STANDARD, GLACIER_IR, INTELLIGENT_TIERING = "STANDARD", "GLACIER_IR", "INTELLIGENT_TIERING"
MIN_TRANSITION_BYTES = 128 * 1024
# Intelligent-Tiering's automatic tiers: Frequent until 30 days without access, Infrequent until 90,
# then Archive Instant Access (no retrieval fee in any of them).
IT_TIERS = (
    (30, "INTELLIGENT_TIERING_FREQUENT"),
    (90, "INTELLIGENT_TIERING_INFREQUENT"),
    (None, "INTELLIGENT_TIERING_ARCHIVE_INSTANT"),
)
# Job output files (features, reduced Parquet): Spark writes parts of tens of MB; assumed 64 MB each for the
# objects counted by Intelligent-Tiering's monitoring and the transitions (not measured).
OUTPUT_OBJECT_BYTES = 64e6
# EMR logs a run leaves under logs/ (assumed, not measured), kept LOG_RETENTION_DAYS.
LOG_BYTES_PER_RUN = 50e6
# The cross-batch duplicate index (fruits.dedup_index's index/): assumed 100 bytes a photo, pruned with the photos.
INDEX_BYTES_PER_PHOTO = 100.0
# The Airflow host: one Graviton instance On-Demand all month (scheduler, API server, triggerer, Postgres)
# with its gp3 volume; `--airflow-host` prices another size.
AIRFLOW_HOST_TYPE = "t4g.medium"
AIRFLOW_HOST_EBS_GIB = 30
# The cluster reaches S3 through a gateway endpoint (free) and nothing else. The priced alternative, a NAT
# gateway up all month, also carries what the nodes download at boot from the internet (assumed 1 GB each:
# the Python wheels, TensorFlow/LiteRT among them).
NETWORK_PATHS = ("s3-gateway-endpoint", "nat-gateway")
NAT_BOOT_DOWNLOAD_GB_PER_NODE = 1.0
# infra/foundation.yaml's interface endpoints (service, AZs it sits in): KMS, which the nodes' local-disk
# encryption calls at boot, in one AZ. Billed per AZ-hour all month whatever the path to S3, plus per GB.
INTERFACE_ENDPOINTS = {"kms": 1}
# What one node's boot sends through the KMS endpoint (a few data keys): 1 MB, generously.
INTERFACE_ENDPOINT_GB_PER_NODE = 0.001
# The Airflow host reaches the AWS APIs (EMR, EC2, STS, Service Quotas) over TLS through one public IPv4
# address, billed per hour: seven interface endpoints instead would cost ~15x more (docs/first-night-on-aws.md).
AIRFLOW_HOST_PUBLIC_IPV4 = 1

# S3 requests, as the pipeline makes them (counted on moto for the upload; the jobs' reads as S3A does them).
# A LIST page holds 1,000 keys.
KEYS_PER_LIST_PAGE = 1000
# featurize's reads of one Parquet bundle (Spark 3.5, parquet-mr over S3A), GET tier: the task that opens
# it resolves its status (1 HEAD) and reads its footer (parquet-mr reads the 8-byte footer length at the
# end, then the footer: counted as 2 GETs, though S3A may serve both from one), then 1 ranged GET per row
# group (its column chunks lie side by side and are fetched as one range; counted one per row group even
# where S3A merges neighbours). A bundle is opened once a scan when it is one split, as on a nightly million;
# re-opening a finer-cut small batch is not counted (docs/choices.md, "Measured behind the constants").
GETS_TO_OPEN_A_BUNDLE = 3
GETS_PER_ROW_GROUP = 1
# featurize.read_bundles scans the bundles once; twice when they hold the decoded photos' bytes (a window's
# --keep-originals): the rows the ingest pass decoded, without their content, and the others; each scan opens every
# bundle and skips the row groups that hold none of its rows (their null counts).
FEATURIZE_SCANS_OF_A_BUNDLE = {False: 1, True: 2}
# A row group read without its `content` (photos the ingest pass decoded): the columns before it and those after it
# are two ranges.
GETS_PER_PRUNED_ROW_GROUP = 2
# The ingest pass's content_sha256 column beside a decoded photo's pixels and derivative (hex digest).
CONTENT_SHA256_BYTES = 64
# One object per photo (the layout before bundles, priced with images_per_object=1), GET tier per
# photo: the upload's HeadObject (its sha256 check) + featurize's binaryFile read.
GETS_PER_PHOTO_OBJECT = 2
# The ingest job reads each listed landing photo with one GET, in its one pass over the landing (it writes the
# bundles as it examines: the listing already listed the photo; binaryFile's status and open HEADs would make it 3);
# the worker's upload reads it once too.
GETS_PER_LANDING_PHOTO = 1
# What the cluster writes goes through EMR's S3-optimized committer, which always uses a multipart upload (EMR
# release guide, "The EMRFS S3-optimized committer and multipart uploads"): create + complete + 1 part per
# 128 MiB (EMRFS's fs.s3n.multipart.uploads.split.size default), all PUT tier, for every file a job writes.
PUTS_PER_COMMITTED_FILE = 2
MULTIPART_PART_BYTES = 128 * 1024 * 1024
# Spark cuts file-source input into splits of at most spark.sql.files.maxPartitionBytes (featurize sets it), and
# featurize writes one features file per split (no shuffle before its write).
SPARK_MAX_SPLIT_BYTES = MAX_SPLIT_BYTES


# ---------------------------------------------------------------------------------------------
# Inputs of the model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overheads:
    """Seconds billed besides the jobs' own work, from EMR's typical cluster timeline (EMR 7, instance
    fleets, a few nodes): STARTING (EC2 launch, OS, Hadoop/Spark install) ~5-6 min, BOOTSTRAPPING (our
    action pip-installs requirements/spark-node.txt: TensorFlow/LiteRT wheels) ~2-3 min, each step's
    spark-submit + YARN application master + executors + weight broadcast ~45 s, and TERMINATING ~1 min
    during which instances still bill. The run report shows the measured ones beside these."""

    startup_s: float = 330.0
    bootstrap_s: float = 150.0
    step_s: float = 45.0
    termination_s: float = 60.0


@dataclass(frozen=True)
class Workload:
    """What one run processes, and how fast. Sizes are per image; requests per S3 object."""

    images: int
    throughput_per_vcpu: float  # featurize end to end, images/s per executor vCPU
    throughput_source: str = "given"
    # Feature rows the PCA step reads tonight (statistics + projection): the night's batch and any caught-up
    # ones, never the history. None: images + catchup_images.
    pca_rows: int | None = None
    # Photos of earlier nights featurized by this run too (batches a failed night left without features).
    catchup_images: int = 0
    # Rows of retained batches projected again on a new basis (only the nights a basis is fitted: rare).
    reexpress_rows: int = 0
    # Batches whose stored statistics a refit merges (0: no refit tonight); never re-reads features.
    refit_batches: int = 0
    # PCA rates per vCPU (benchmarks/results/pca_throughput.json when None; see `default_pca_rates`).
    pca_stats_rows_per_s_per_vcpu: float | None = None
    pca_project_rows_per_s_per_vcpu: float | None = None
    pca_rate_source: str = "given"
    # Mean JPEG size of the Fruits-360 sample (960 files, 100x100): 4,530 bytes.
    mean_image_bytes: float = 4530.0
    # One features row (1280 float32 + path/label/split/sha256/batch) as featurize writes it (zstd, no
    # dictionary for the floats): measured on its output for the 960 sample photos, 3,363,466 bytes in
    # 16 files (2026-11-25; 4,085 bytes a row with Spark's default snappy).
    feature_bytes: float = 3500.0
    # Photos per S3 object. None: Parquet bundles as fruits.upload writes them (`bundle_photos`);
    # 1: one object per photo, the layout before bundles (for comparison); n: bundles of n photos.
    images_per_object: int | None = None
    # The batch's actual object count when it is known (the run report reads the batch manifest);
    # None: derived from the image count and images_per_object. Bundles either way.
    objects_in_batch: int | None = None
    # Where the upload reads the new photos: a local folder (the DAG's default landing) costs no
    # request; an s3:// landing costs 1 GET per photo and 1 LIST per 1,000 landing objects.
    landing_on_s3: bool = False
    # Batches already in the lake: the upload reads each one's manifest (1 GET) to skip photos it
    # holds. A year of nightly batches by default; 0.0004 USD per 1,000 batches.
    earlier_batches: int = 365
    # Per photo, per-batch PCA outputs (measured on a local run): reduced Parquet and the pca_matrix/ CSV.
    reduced_bytes: float = 880.0
    csv_bytes: float = 2470.0
    # Photo classes (`photo_mix`): the mix's name; ingestion on the cluster at this rate (photos/s per vCPU: read,
    # identify, strip, hash, bundle, and decode the photos bigger than their model pixels; None: the upload runs on
    # the Airflow host, no cluster step); the derivative kept per photo in derived/ (0: none); the original's days
    # in raw/ (None: the batch's whole retention, the layout before issue 22; 0: removed by their run,
    # `originals_seconds`); an s3:// landing's photos: their mean bytes as uploaded (before stripping) and their
    # days there (0: not counted).
    photo_mix: str | None = None
    ingest_per_vcpu: float | None = None
    derivative_bytes: float = 0.0
    original_retention_days: int | None = None
    landing_image_bytes: float | None = None
    landing_days: float = 0.0
    # The photos the ingest pass decodes (stored bytes more than PIXELS_BYTES): their share of the night; per photo
    # of the night, the bytes their bundle rows hold of them (pixels, derivative, hash; 0 for a photo not decoded),
    # their own stripped bytes and landing bytes (their rows hold the stripped bytes only when original_retention_days
    # is not 0: `keeps_decoded_photos`), and what featurize reads of a row (those columns, Parquet column pruning,
    # for a decoded photo; the stored photo for another; None: the stored photo, nothing decoded).
    decoded_share: float = 0.0
    decoded_bytes: float = 0.0
    decoded_stripped_bytes: float = 0.0
    decoded_landing_bytes: float = 0.0
    featurize_read_bytes: float | None = None
    # Changes to the jobs not made yet, priced by `cost_compare.photo_levers` (the defaults are today's jobs): GET-tier
    # requests per landing photo (None: GETS_PER_LANDING_PHOTO), featurize's output files (None: one
    # per input split, `featurize_output_files`), ingest and featurize one step (True: each landing photo decoded
    # and inferred in the task that reads it, no bundles written or read back; needs the ingest step it fuses).
    landing_gets_per_photo: int | None = None
    featurize_outputs: int | None = None
    ingest_fused: bool = False
    # Months of S3 Standard storage charged to the run for the new data it adds (raw photos + features),
    # the model before storage classes; None: the batch's whole stay in the lake, every area in its class
    # (`batch_storage_usd`), which is what the run adds to the bills of the coming year.
    storage_months: float | None = None

    def __post_init__(self) -> None:
        counts = (
            self.images,
            self.pca_rows or 0,
            self.objects_in_batch or 0,
            self.earlier_batches,
            self.catchup_images,
            self.reexpress_rows,
            self.refit_batches,
        )
        if min(counts) < 0:
            raise ValueError("image, row, object and batch counts cannot be negative")
        if self.pca_stats_rows_per_s_per_vcpu is None or self.pca_project_rows_per_s_per_vcpu is None:
            try:
                stats, project, source = default_pca_rates()
            except FileNotFoundError as missing:  # only a wall-time estimate needs them (job_seconds says so)
                stats, project, source = None, None, str(missing)
            object.__setattr__(self, "pca_stats_rows_per_s_per_vcpu", self.pca_stats_rows_per_s_per_vcpu or stats)
            object.__setattr__(self, "pca_project_rows_per_s_per_vcpu", self.pca_project_rows_per_s_per_vcpu or project)
            object.__setattr__(self, "pca_rate_source", source)
        rates = (self.throughput_per_vcpu, self.pca_stats_rows_per_s_per_vcpu, self.pca_project_rows_per_s_per_vcpu)
        if min(r for r in rates if r is not None) <= 0:
            raise ValueError("throughputs must be positive")
        if min(self.mean_image_bytes, self.feature_bytes, self.reduced_bytes, self.csv_bytes) <= 0:
            raise ValueError("per-photo sizes must be positive")
        if (self.images_per_object is not None and self.images_per_object < 1) or (self.storage_months or 0) < 0:
            raise ValueError("images_per_object must be >= 1 and storage_months >= 0")
        if self.images_per_object == 1 and self.objects_in_batch is not None:
            raise ValueError("objects_in_batch counts bundles: it does not go with one object per photo")
        if self.ingest_fused and not self.ingest_per_vcpu:
            raise ValueError("ingest_fused fuses the cluster's ingest step into featurize: it needs ingest_per_vcpu")
        decoded_sizes = (self.decoded_bytes, self.decoded_stripped_bytes, self.decoded_landing_bytes)
        if not 0 <= self.decoded_share <= 1 or min(decoded_sizes) < 0 or (self.featurize_read_bytes or 0) < 0:
            raise ValueError("decoded_share is a share (0 to 1); decoded and read bytes cannot be negative")
        if self.decoded_stripped_bytes > self.mean_image_bytes:
            raise ValueError("decoded_stripped_bytes is part of the night's mean_image_bytes")
        if self.decoded_share and not self.ingest_per_vcpu:
            raise ValueError("only the cluster's ingest pass decodes photos: decoded_share needs ingest_per_vcpu")

    @property
    def one_object_per_photo(self) -> bool:
        return self.images_per_object == 1

    @property
    def photos_per_object(self) -> float:
        """Mean photos per object: the actual mean when the object count is known, else the layout's."""
        if self.objects_in_batch:
            return self.images / self.objects_in_batch
        return self.layout_photos_per_object

    @property
    def layout_photos_per_object(self) -> float:
        """Mean photos per object of the layout (also for batches whose object count is not known, e.g. caught-up
        ones): one a photo, the ingest job's bundles of a night this size (`ingest_bundles`), or fruits.upload's."""
        if self.images_per_object:
            return self.images_per_object
        if self.ingest_per_vcpu:
            photos = self.images or self.catchup_images or 1
            return photos / ingest_bundles(photos, photos * self.ingest_bundled_bytes)
        return bundle_photos(self.mean_image_bytes)

    @property
    def objects(self) -> int:
        if self.ingest_fused:  # the photos go from the landing to featurize's outputs: no bundles
            return 0
        if self.objects_in_batch is not None:
            return self.objects_in_batch
        if self.ingest_per_vcpu and not self.images_per_object:
            return ingest_bundles(self.images, self.images * self.ingest_bundled_bytes)
        return math.ceil(self.images / self.photos_per_object)

    @property
    def keeps_decoded_photos(self) -> bool:
        """Whether a decoded photo's bundle row keeps its stripped bytes: only with an original_retention_days window
        (ingest's --keep-originals; None: the model before such windows, the originals kept)."""
        return self.original_retention_days != 0

    @property
    def bundle_row_bytes(self) -> float:
        """Mean bytes of a photo's bundle row: the stored photo, or, for one the ingest pass decoded, its columns
        (+ its stored bytes only when `keeps_decoded_photos`)."""
        dropped = 0.0 if self.keeps_decoded_photos else self.decoded_stripped_bytes
        return self.mean_image_bytes - dropped + self.decoded_bytes

    @property
    def ingest_bundled_bytes(self) -> float:
        """Mean bytes a photo brings to its bundle as the ingest job counts them from the listing's sizes when it
        cuts its bundles (ingest.bundled_bytes): a decoded photo its model pixels (+ its own only when
        `keeps_decoded_photos`), another its own."""
        landing = self.landing_image_bytes or self.mean_image_bytes
        kept = self.decoded_landing_bytes if self.keeps_decoded_photos else 0.0
        return landing - self.decoded_landing_bytes + kept + self.decoded_share * PIXELS_BYTES

    @property
    def featurize_bytes_per_photo(self) -> float:
        """Mean bytes featurize reads of a photo's bundle row (`featurize_read_bytes`, else the stored photo)."""
        return self.mean_image_bytes if self.featurize_read_bytes is None else self.featurize_read_bytes

    @property
    def pca_row_count(self) -> int:
        return self.images + self.catchup_images if self.pca_rows is None else self.pca_rows

    @property
    def featurized_images(self) -> int:
        return self.images + self.catchup_images


@dataclass(frozen=True)
class PhotoMix:
    """What a night of a photo mix costs per photo, from benchmarks/results/photo_classes.json. The decoded fields
    are the `Workload`'s of the same names (per photo of the night)."""

    name: str
    featurize_per_vcpu: float
    ingest_per_vcpu: float
    original_bytes: float
    stripped_bytes: float
    derivative_bytes: float
    decoded_share: float
    decoded_bytes: float
    decoded_stripped_bytes: float
    decoded_landing_bytes: float
    featurize_read_bytes: float
    source: str


def decoded_by_ingest(photo_class: dict[str, Any]) -> bool:
    """Whether the ingest pass decodes a class's photos: their stored bytes are more than their model pixels
    (featurize.PIXELS_BYTES), so featurize reading the pixels reads less than reading the photo."""
    return photo_class["mean_stripped_bytes"] > PIXELS_BYTES


def photo_mix(name: str, path: Path = PHOTO_CLASSES_FILE, throughput: Path = THROUGHPUT_FILE) -> PhotoMix:
    """The mix's per-vCPU rates (a photo's seconds are the share-weighted mean of its class's) and mean bytes.

    A class whose stored photos are bigger than their model pixels (`decoded_by_ingest`: the phone photos) is
    decoded once, by the ingest pass, which writes the pixels, the derivative and the content hash into the photo's
    bundle row; featurize then reads those columns only (not the photo) and infers. A smaller class (thumbnails)
    is decoded by featurize as before.
    ingest: the ingest pass's per-photo work as the job does it (photos.examine, then, for a photo bigger than its
    model pixels, featurize.decoded_columns: its decode, pixels and derivative), one thread, measured side by side
    in photo_classes.json (`ingest_pass_per_s_one_thread`).
    featurize: a decoded class costs a thumbnail's end-to-end seconds per vCPU (inference_throughput.json: 28,800
    photos, the job's fixed start a small share): inference on the 224 x 224 tensor and the features row do not
    depend on the class, and a thumbnail's decode, which a decoded photo no longer has, is counted anyway
    (conservative: a few % of a thumbnail's seconds). Another class costs a thumbnail's seconds plus what its
    decode costs more than a thumbnail's; so `thumbnail` is today's rate. Not the ratio of photo_classes.json's own
    end-to-end runs: a few hundred photos there take less time than the job's fixed start (~15 s), which then sets
    the ratio. What a bigger photo costs in moving its bytes is the network bound of `job_seconds`, not a rate.
    Priced class by class: a night mixing decoded and not decoded photos in one bundle would read the content
    column of its row groups for the small ones (not modelled; each of the mixes is on one side)."""
    if name not in PHOTO_MIXES:
        raise ValueError(f"photo mix must be one of {sorted(PHOTO_MIXES)}, not {name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run benchmarks/photo_classes.py (benchmarks/README.md)")
    result = json.loads(path.read_text())
    classes, shares = result["classes"], PHOTO_MIXES[name]
    thumbnail_rate, thumbnail_source = default_throughput(throughput)

    def mean(per_class) -> float:
        return sum(share * per_class(classes[c]) for c, share in shares.items())

    def rate(seconds_per_photo) -> float:
        return 1 / mean(seconds_per_photo)

    thumbnail_decode_s = 1 / classes["thumbnail"]["decode_preprocess_per_s_one_thread"]

    def decode_s(c: dict[str, Any]) -> float:
        return 1 / c["decode_preprocess_per_s_one_thread"]

    def ingest_s(c: dict[str, Any]) -> float:
        return 1 / c["ingest_pass_per_s_one_thread"]

    def featurize_s(c: dict[str, Any]) -> float:
        extra_decode_s = 0.0 if decoded_by_ingest(c) else max(0.0, decode_s(c) - thumbnail_decode_s)
        return 1 / thumbnail_rate + extra_decode_s

    def decoded_row_bytes(c: dict[str, Any]) -> float:
        decoded = PIXELS_BYTES + c["mean_derivative_bytes"] + CONTENT_SHA256_BYTES
        return decoded if decoded_by_ingest(c) else 0.0

    decoded = [c for c in shares if decoded_by_ingest(classes[c])]
    return PhotoMix(
        name=name,
        featurize_per_vcpu=rate(featurize_s),
        ingest_per_vcpu=rate(ingest_s),
        original_bytes=mean(lambda c: c["mean_bytes"]),
        stripped_bytes=mean(lambda c: c["mean_stripped_bytes"]),
        derivative_bytes=mean(lambda c: c["mean_derivative_bytes"]),
        decoded_share=sum(shares[c] for c in decoded),
        decoded_bytes=mean(decoded_row_bytes),
        decoded_stripped_bytes=mean(lambda c: c["mean_stripped_bytes"] if decoded_by_ingest(c) else 0.0),
        decoded_landing_bytes=mean(lambda c: c["mean_bytes"] if decoded_by_ingest(c) else 0.0),
        featurize_read_bytes=mean(lambda c: decoded_row_bytes(c) or c["mean_stripped_bytes"]),
        source=(
            f"photo mix {name} ({', '.join(f'{share:.0%} {c}' for c, share in shares.items())}): "
            f"thumbnails' {thumbnail_source} + each class's extra decode seconds where featurize decodes, "
            f"{path.name} (measured_at {result.get('measured_at', '?')}); decoded by the ingest pass: "
            f"{', '.join(decoded) or 'none'}"
        ),
    )


def bundle_photos(mean_image_bytes: float) -> int:
    """Photos per bundle the upload writes, at this mean photo size: whichever of its limits comes first."""
    return max(1, min(storage.BUNDLE_MAX_PHOTOS, int(storage.BUNDLE_MAX_BYTES // mean_image_bytes)))


def ingest_bundles(photos: int, bundled_bytes: float) -> int:
    """Bundle files the ingest job writes for `photos` storable photos bringing `bundled_bytes` (as it counts them,
    ingest.bundled_bytes), by its own rule: read in tasks of at most PHOTOS_PER_TASK photos and BUNDLE_MAX_BYTES
    (ingest.bundle_landing), coalesced into as many parts as BUNDLE_MAX_PHOTOS and BUNDLE_MAX_BYTES ask
    (ingest.write_bundles: Spark gives each part a run of whole tasks, the extra ones one more), each part cut
    into files of at most BUNDLE_MAX_PHOTOS (maxRecordsPerFile): two tasks of a part make two files when they hold
    more than BUNDLE_MAX_PHOTOS together."""
    if photos <= 0:
        return 0
    by_bytes = math.ceil(bundled_bytes / ingest.BUNDLE_MAX_BYTES)
    tasks = max(1, math.ceil(photos / ingest.PHOTOS_PER_TASK), by_bytes)
    parts = min(tasks, max(1, math.ceil(photos / ingest.BUNDLE_MAX_PHOTOS), by_bytes))
    fewer, more = divmod(tasks, parts)  # `more` parts coalesce fewer + 1 tasks

    def files(part_tasks: int) -> int:
        return max(1, math.ceil(math.ceil(part_tasks * photos / tasks) / ingest.BUNDLE_MAX_PHOTOS))

    return more * files(fewer + 1) + (parts - more) * (files(fewer) if fewer else 0)


@dataclass(frozen=True)
class BilledInstances:
    """`count` instances of one type, billed for `seconds` each, in one market."""

    role: str  # MASTER / CORE / TASK / SINGLE / SERVERLESS
    instance_type: str
    market: str  # ON_DEMAND / SPOT
    count: int
    seconds: float
    ebs_gib: float
    emr: bool = True  # the EMR uplift applies (not to a plain EC2 instance)


def default_throughput(path: Path = THROUGHPUT_FILE) -> tuple[float, str]:
    """images/s per vCPU measured by the featurize benchmark, with where it comes from."""
    if path.is_file():
        result = json.loads(path.read_text())
        value = float(result["images_per_second_per_vcpu"])
        return value, (
            f"measured: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} "
            f"({result.get('cores', '?')} cores, measured_at {result.get('measured_at', '?')})"
        )
    return FALLBACK_THROUGHPUT_PER_VCPU, FALLBACK_THROUGHPUT_SOURCE


def default_pca_rates(path: Path = PCA_THROUGHPUT_FILE) -> tuple[float, float, str]:
    """(statistics, projection) rows/s per vCPU from the PCA benchmark's results, with where they come from."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the PCA benchmark (benchmarks/) or pass the PCA rates")
    result = json.loads(path.read_text())
    name = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    where = f"{result.get('machine', '?')}, {result.get('measured_at', '?')}"
    source = f"{result.get('source', 'measured')}: {name} ({where})"
    return float(result["stats_rows_per_second_per_vcpu"]), float(result["project_rows_per_second_per_vcpu"]), source


def instance_facts(instance_type: str) -> InstanceFacts:
    facts = INSTANCE_TYPES.get(instance_type)
    if facts is None:
        raise ValueError(f"unknown instance type {instance_type!r}: add it to fruits.emr_cluster.INSTANCE_TYPES")
    return facts


def normalization_factor(instance_type: str) -> float:
    size = instance_type.split(".", 1)[-1]
    if size not in NORMALIZATION_FACTORS:
        raise ValueError(f"no EMR normalization factor for size {size!r} ({instance_type})")
    return NORMALIZATION_FACTORS[size]


# ---------------------------------------------------------------------------------------------
# Prices
# ---------------------------------------------------------------------------------------------


class PriceBook:
    """The prices file, read: lookups that say which price is missing and how to get it."""

    def __init__(self, document: dict[str, Any]):
        self.document = document

    @classmethod
    def load(cls, path: Path = PRICES_FILE) -> PriceBook:
        return cls(json.loads(Path(path).read_text()))

    @property
    def eur_per_usd(self) -> float:
        return float(self.document["eur_per_usd"]["rate"])

    @property
    def stamp(self) -> dict[str, Any]:
        doc = self.document
        return {"stamped": doc["stamped"], "values_as_of": doc["values_as_of"], "source": doc["source"]}

    def region(self, region: str, allowed: Iterable[str] | str | None = None) -> dict[str, Any]:
        check_region(region, allowed)
        if region not in self.document["regions"]:
            raise ValueError(f"no prices for {region} in {PRICES_FILE.name}: run `python -m fruits.cli.costs refresh`")
        return self.document["regions"][region]

    def _hourly(self, region: str, table: str, instance_type: str) -> float:
        prices = self.region(region)[table]
        if prices.get(instance_type) is None:
            raise ValueError(
                f"no {table} price for {instance_type} in {region}: "
                f"run `python -m fruits.cli.costs refresh --instance-type {instance_type}`"
            )
        return float(prices[instance_type])

    def ec2_hourly(self, region: str, instance_type: str, market: str = ON_DEMAND) -> float:
        if market == SPOT:
            sampled = self.region(region).get("spot_hourly", {}).get(instance_type)
            if sampled is not None:
                return float(sampled)
            discount = float(self.document["spot"]["typical_discount"])
            return self._hourly(region, "ec2_on_demand_hourly", instance_type) * (1 - discount)
        return self._hourly(region, "ec2_on_demand_hourly", instance_type)

    def spot_price_source(self, region: str, instance_type: str) -> str:
        if self.region(region).get("spot_hourly", {}).get(instance_type) is not None:
            return f"sampled spot price ({self.region(region).get('spot_sampled_at', '?')})"
        return f"On-Demand less the typical {self.document['spot']['typical_discount']:.0%} spot discount"

    def emr_hourly(self, region: str, instance_type: str) -> float:
        return self._hourly(region, "emr_hourly", instance_type)

    def unit(self, region: str, name: str) -> float:
        return float(self.region(region)[name])


# ---------------------------------------------------------------------------------------------
# Billing: the functions both the estimate and the run report use
# ---------------------------------------------------------------------------------------------


def billed_seconds(seconds: float) -> float:
    return max(BILLING_MINIMUM_SECONDS, seconds)


def instance_costs(instances: Sequence[BilledInstances], region: str, prices: PriceBook) -> dict[str, float]:
    """EC2 + EMR uplift + EBS (USD) for these instances, as AWS bills them."""
    ec2 = emr = ebs = 0.0
    ebs_month = prices.unit(region, "ebs_gp3_gb_month")
    for group in instances:
        if group.count <= 0:
            continue
        seconds = billed_seconds(group.seconds)
        ec2 += group.count * seconds / SECONDS_PER_HOUR * prices.ec2_hourly(region, group.instance_type, group.market)
        if group.emr:
            emr += group.count * seconds / SECONDS_PER_HOUR * prices.emr_hourly(region, group.instance_type)
        ebs += group.count * group.ebs_gib * ebs_month * group.seconds / SECONDS_PER_MONTH
    return {"ec2": ec2, "emr": emr, "ebs": ebs}


def list_pages(keys: int) -> int:
    """LIST requests to list `keys` keys (an empty folder still takes one)."""
    return max(1, math.ceil(keys / KEYS_PER_LIST_PAGE))


def featurize_gets_per_bundle(photos: float, decoded_share: float = 0.0, keep_originals: bool = False) -> float:
    """GET-tier requests featurize makes to read one bundle of `photos` photos (see GETS_TO_OPEN_A_BUNDLE): opened by
    each of its scans (FEATURIZE_SCANS_OF_A_BUNDLE); with `keep_originals` (the decoded photos' bytes in the bundle),
    a `decoded_share` of its row groups read without their content (GETS_PER_PRUNED_ROW_GROUP), the others whole
    (each class's photos fill their row groups: a mix of both in one row group, read by both scans, is not
    counted); without, every row group whole (a decoded photo's content is null)."""
    pruned = decoded_share if keep_originals else 0.0
    per_row_group = GETS_PER_ROW_GROUP + pruned * (GETS_PER_PRUNED_ROW_GROUP - GETS_PER_ROW_GROUP)
    opens = FEATURIZE_SCANS_OF_A_BUNDLE[keep_originals] * GETS_TO_OPEN_A_BUNDLE
    return opens + per_row_group * math.ceil(photos / storage.BUNDLE_ROW_GROUP_PHOTOS)


def committed_file_puts(files: int, total_bytes: float) -> int:
    """PUT-tier requests of a Spark job on EMR writing `files` files of `total_bytes` together (the S3-optimized
    committer's multipart upload of each: PUTS_PER_COMMITTED_FILE + a part per MULTIPART_PART_BYTES)."""
    if files <= 0:
        return 0
    return files * (PUTS_PER_COMMITTED_FILE + max(1, math.ceil(total_bytes / files / MULTIPART_PART_BYTES)))


def featurize_output_files(workload: Workload) -> int:
    """Features files featurize writes: one per input split (SPARK_MAX_SPLIT_BYTES of bundles: Spark cuts by file
    bytes, whichever columns it reads), at least the OUTPUT_OBJECT_BYTES parts assumed for small photos; its
    derivatives (derived/) come from the same tasks."""
    images = workload.featurized_images
    if workload.featurize_outputs is not None:
        return min(images, workload.featurize_outputs)
    by_output = math.ceil(images * workload.feature_bytes / OUTPUT_OBJECT_BYTES)
    by_input = math.ceil(images * workload.bundle_row_bytes / SPARK_MAX_SPLIT_BYTES)
    return min(images, max(by_output, by_input))


def landing_gets_per_photo(workload: Workload) -> int:
    if workload.landing_gets_per_photo is not None:
        return workload.landing_gets_per_photo
    return GETS_PER_LANDING_PHOTO


def s3_requests(workload: Workload) -> dict[str, dict[str, int]]:
    """The run's S3 requests by price tier ("put": PUT/COPY/POST/LIST, "get": GET/HEAD) and by what
    makes them: per object (the bundles' writes and featurize's reads, the jobs' output files), per photo (a
    landing's reads; a landing outside S3 staged for the ingest job, one object a photo) and per run (the batch
    manifest, the listings)."""
    objects = workload.objects
    if workload.one_object_per_photo:
        reads_per_object = GETS_PER_PHOTO_OBJECT
    else:
        reads_per_object = featurize_gets_per_bundle(
            workload.photos_per_object, workload.decoded_share, workload.keeps_decoded_photos
        )
    featurize_reads = round(objects * reads_per_object)
    on_cluster = bool(workload.ingest_per_vcpu)  # the ingest job (binaryFile) rather than the worker's upload
    staged = on_cluster and not workload.landing_on_s3  # fruits.upload.write_listing(stage=True)
    # The batch folder holds the objects and the manifest; the upload lists the raw area's batches once
    # and the batch folder once (leftover bundles), featurize lists the batch folder once.
    folder_pages = list_pages(objects + 1)
    bundle_bytes = workload.images * workload.bundle_row_bytes
    outputs = featurize_output_files(workload)
    outputs_written = committed_file_puts(outputs, workload.featurized_images * workload.feature_bytes)
    if workload.derivative_bytes:
        outputs_written += committed_file_puts(outputs, workload.featurized_images * workload.derivative_bytes)
    landing_read = workload.landing_on_s3 or staged
    put = {
        "upload_objects": committed_file_puts(objects, bundle_bytes) if on_cluster else objects,
        "upload_manifest": 1,
        "upload_listings": 1 + folder_pages,
        "featurize_listing": folder_pages,
        # Listed once, by the planner (the ingest job reads what the listing names).
        "landing_listing": list_pages(workload.images) if landing_read else 0,
        "landing_staging": workload.images if staged else 0,
        # Features (and derivatives) files + the quarantine's one file.
        "featurize_outputs": outputs_written + committed_file_puts(1 if workload.featurized_images else 0, 0),
    }
    get = {
        "featurize_reads": featurize_reads,
        "upload_manifests": 1 + workload.earlier_batches,
        "landing_reads": workload.images * landing_gets_per_photo(workload) if landing_read else 0,
        # Earlier nights' bundles featurized by this run (same reads per bundle as tonight's).
        "catchup_reads": round(
            math.ceil(workload.catchup_images / workload.layout_photos_per_object) * reads_per_object
        ),
        # The PCA opens each features file (one row group) for its statistics, then for the projection.
        "pca_reads": 2
        * math.ceil(outputs * workload.pca_row_count / max(1, workload.featurized_images))
        * (GETS_TO_OPEN_A_BUNDLE + GETS_PER_ROW_GROUP),
        # A refit reads each merged batch's commit marker and its statistics file.
        "refit_stats_reads": 2 * workload.refit_batches,
    }
    return {"put": put, "get": get}


def s3_request_costs(workload: Workload, region: str, prices: PriceBook) -> dict[str, dict[str, float]]:
    """Each line of `s3_requests` with its USD (JSON-ready: the DAG passes the estimate on)."""
    unit = {tier: prices.unit(region, f"s3_{tier}_per_1000") / 1000 for tier in ("put", "get")}
    return {
        f"{tier.upper()} {name}": {"requests": count, "usd": round(count * unit[tier], 4)}
        for tier, lines in s3_requests(workload).items()
        for name, count in lines.items()
    }


def s3_costs(workload: Workload, region: str, prices: PriceBook, originals_s: float | None = None) -> dict[str, float]:
    """S3 requests (`s3_requests`) and storage the run causes; `originals_s`: see `resident_days`."""
    requests = s3_requests(workload)
    puts, gets = sum(requests["put"].values()), sum(requests["get"].values())
    if workload.storage_months is None:
        storage = sum(area["usd"] for area in batch_storage(workload, region, prices, originals_s).values())
    else:
        stored_gb = workload.images * (workload.mean_image_bytes + workload.feature_bytes) / 1e9
        storage = stored_gb * workload.storage_months * prices.unit(region, "s3_standard_gb_month")
    costs = {
        "s3_requests": puts / 1000 * prices.unit(region, "s3_put_per_1000")
        + gets / 1000 * prices.unit(region, "s3_get_per_1000"),
        "s3_storage": storage,
    }
    if workload.landing_days:
        landing_gb = workload.images * (workload.landing_image_bytes or workload.mean_image_bytes) / 1e9
        months = workload.landing_days / DAYS_PER_MONTH
        costs["s3_landing_storage"] = landing_gb * months * prices.unit(region, "s3_standard_gb_month")
    if workload.reexpress_rows and workload.storage_months is None:
        costs.update(new_basis_storage(workload, region, prices))
    return costs


def new_basis_storage(workload: Workload, region: str, prices: PriceBook) -> dict[str, float]:
    """What re-expressing `workload.reexpress_rows` retained rows costs in S3 besides the cluster: reading their
    features back from their class (retrieval), and the new basis' outputs starting their tiers again in place of
    the old basis' (deleted once the new ones are committed; kept, pca/ would double until they expire)."""
    entry = prices.region(region)
    features = STORAGE_PLAN["features/"]
    read_gb = workload.reexpress_rows * workload.feature_bytes / 1e9
    retrieval = read_gb * entry["s3_retrieval_per_gb"].get(features.storage_class, 0.0)
    outputs, classes = STORAGE_PLAN["pca/"], entry["s3_classes_gb_month"]
    written_gb = workload.reexpress_rows * (workload.reduced_bytes + workload.csv_bytes) / 1e9
    # The old outputs were past their first 90 days (the cheapest tier) for most of the rows: each day the new
    # ones spend in a dearer tier or class until they reach it again is the cost.
    days = int(resident_days(outputs))
    settled = class_price_key(outputs, days - 1)
    bump = sum(classes[class_price_key(outputs, age)] - classes[settled] for age in range(days))
    return {"s3_retrieval": retrieval, "s3_new_basis_tiers": written_gb * bump / DAYS_PER_MONTH}


def storage_basis(workload: Workload) -> str:
    """What a run's s3_storage component stands for (it is named in every estimate and run report)."""
    if workload.storage_months is None:
        originals = {
            None: "",
            0: "; the originals (raw/) the run's hours from its ingest step",
        }.get(workload.original_retention_days, f"; the originals (raw/) {workload.original_retention_days} day(s)")
        return (
            f"the batch's stay in the lake: {RETENTION_DAYS} days + {NONCURRENT_GRACE_DAYS} days of noncurrent "
            f"versions, every area in its storage class (STORAGE_PLAN){originals}"
        )
    return f"{workload.storage_months:g} month(s) of S3 Standard for the raw photos and features"


def s3_layout(workload: Workload) -> dict[str, Any]:
    """What the S3 part of an estimate was priced on (JSON-ready)."""
    requests = s3_requests(workload)
    return {
        "layout": "one object per photo"
        if workload.one_object_per_photo
        else "no bundles (ingest and featurize one step)"
        if workload.ingest_fused
        else f"Parquet bundles ({'the ingest job' if workload.ingest_per_vcpu else 'fruits.upload'})",
        "featurize_output_files": featurize_output_files(workload),
        "objects": workload.objects,
        "photos_per_object": round(workload.photos_per_object, 1),
        "decoded_by_ingest": workload.decoded_share,
        "featurize_read_bytes_per_photo": round(workload.featurize_bytes_per_photo),
        "landing_on_s3": workload.landing_on_s3,
        "requests": requests,
        "put_tier": sum(requests["put"].values()),
        "get_tier": sum(requests["get"].values()),
    }


def summarize(components: dict[str, float], images: int, eur_per_usd: float) -> dict[str, Any]:
    """Totals, per 1,000 and per million images, in USD with EUR beside it."""
    total = sum(components.values())
    per_thousand = total / images * 1000 if images else None
    # 8 decimals per 1,000 images: with photos in bundles a thousand cost ~0.0005 USD.
    return {
        "components_usd": {k: round(v, 6) for k, v in components.items()},
        "total_usd": round(total, 6),
        "total_eur": round(total * eur_per_usd, 6),
        "per_1000_images_usd": None if per_thousand is None else round(per_thousand, 8),
        "per_million_images_usd": None if per_thousand is None else round(per_thousand * 1000, 4),
        "eur_per_usd": eur_per_usd,
    }


# ---------------------------------------------------------------------------------------------
# Storage classes, the steady-state month
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AreaPlan:
    """How the lifecycle keeps one lake area: the class objects of 128 KiB or more move to, after how many
    days (None: they stay Standard), and when they expire; `read_by` is why that class."""

    prefix: str
    storage_class: str
    transition_days: int | None
    expiration_days: int
    read_by: str


# One source of truth for the lifecycle of infra/foundation.yaml (tests/test_costs.py checks the template).
STORAGE_PLAN = {
    "raw/": AreaPlan(
        "raw/",
        GLACIER_IR,
        7,
        RETENTION_DAYS,
        "featurize reads a night's bundles that night, a catch-up within days; kept past a week (a "
        "fruits_original_retention_days window, or the whole retention as before issue 22), only an erasure "
        "reads one (0.03 USD/GB retrieval, rare)",
    ),
    "derived/": AreaPlan(
        "derived/",
        GLACIER_IR,
        7,
        RETENTION_DAYS,
        "re-featurizing when the model changes (once per model, 0.03 USD/GB) or an erasure: the derivative "
        "replaces the original after its short window (docs/gdpr.md)",
    ),
    "features/": AreaPlan(
        "features/",
        GLACIER_IR,
        7,
        RETENTION_DAYS,
        "the PCA reads a batch the night it is written (a catch-up within days); later only a "
        "re-expression reads them, once per new basis (0.03 USD/GB, cheaper than resetting "
        "Intelligent-Tiering's tiers), or an erasure one file",
    ),
    "pca/": AreaPlan(
        "pca/",
        INTELLIGENT_TIERING,
        0,
        RETENTION_DAYS,
        "statistics read by refits, the current basis every night (under 128 KiB: stays Standard), "
        "reduced Parquet and CSVs by analysts at any time: tiers follow the reads, no retrieval fee",
    ),
    "quarantine/": AreaPlan("quarantine/", STANDARD, None, RETENTION_DAYS, "a few rows a night, read by people"),
    "index/": AreaPlan("index/", STANDARD, None, RETENTION_DAYS, "read by every upload"),
    "logs/": AreaPlan("logs/", STANDARD, None, LOG_RETENTION_DAYS, "read when a run fails, within days"),
}


def class_price_key(plan: AreaPlan, age_days: int) -> str:
    """The price-table key an object of `plan`'s area (128 KiB or more) is billed at, `age_days` after creation."""
    if plan.transition_days is None or age_days < plan.transition_days:
        return STANDARD
    if plan.storage_class != INTELLIGENT_TIERING:
        return plan.storage_class
    in_tiering = age_days - plan.transition_days
    return next(key for limit, key in IT_TIERS if limit is None or in_tiering < limit)


def resident_days(plan: AreaPlan, workload: Workload | None = None, originals_s: float | None = None) -> float:
    """Days an object of the area is billed: until it expires, then as a noncurrent version for the grace; an
    original (raw/ bundle) only its window when the workload has one (the sweep deletes every version), or,
    window 0, the `originals_s` seconds of the run that removes it (every version too), as a fraction of a day."""
    full = plan.expiration_days + NONCURRENT_GRACE_DAYS
    if plan.prefix != "raw/" or workload is None or workload.original_retention_days is None:
        return full
    if workload.original_retention_days == 0:
        if originals_s is None:
            raise ValueError("originals removed by their run (original_retention_days 0) need the run's seconds")
        return originals_s / SECONDS_PER_DAY
    return min(workload.original_retention_days, full)


def originals_seconds(seconds: dict[str, float]) -> float:
    """How long a night's originals stay in raw/ when the run that commits their features removes them (an
    estimate's `seconds`): from the ingest step's start to the end of the run (`remove_originals` follows the
    cluster's end); photos uploaded before the cluster (no ingest step) the whole run."""
    before_ingest = seconds.get("startup_s", 0.0) + seconds.get("bootstrap_s", 0.0) if "ingest_s" in seconds else 0.0
    return seconds["wall_s"] - before_ingest


def day_shares(days: float) -> list[float]:
    """The share of each day of its age an object is billed for over `days` (the last one partly)."""
    return [min(1.0, days - age) for age in range(math.ceil(days))]


def area_volumes(workload: Workload) -> dict[str, dict[str, float]]:
    """Bytes and objects of 128 KiB or more one night adds to each area."""
    images = workload.featurized_images
    per_object = workload.layout_photos_per_object
    bundle_bytes = per_object * workload.bundle_row_bytes
    features = images * workload.feature_bytes
    reduced = images * workload.reduced_bytes
    csv_bytes = images * workload.csv_bytes

    def parts(total: float) -> int:
        return math.ceil(total / OUTPUT_OBJECT_BYTES) if total >= MIN_TRANSITION_BYTES else 0

    def featurize_files(total: float) -> int:  # one file per featurize task: those of 128 KiB or more move
        files = featurize_output_files(workload)
        return files if files and total / files >= MIN_TRANSITION_BYTES else 0

    derived = images * workload.derivative_bytes
    bundled = 0 if workload.ingest_fused else images  # a fused step writes no originals into raw/
    return {
        "raw/": {
            "bytes": bundled * workload.bundle_row_bytes,
            "large_objects": (math.ceil(bundled / per_object) if bundle_bytes >= MIN_TRANSITION_BYTES else 0),
        },
        **({"derived/": {"bytes": derived, "large_objects": featurize_files(derived)}} if derived else {}),
        "features/": {"bytes": features, "large_objects": featurize_files(features)},
        "pca/": {
            "bytes": reduced + csv_bytes + STATS_BYTES_PER_BATCH,
            "large_objects": parts(reduced) + parts(csv_bytes) + 1,
        },
        "quarantine/": {"bytes": 0.0, "large_objects": 0},
        "index/": {"bytes": images * INDEX_BYTES_PER_PHOTO, "large_objects": 0},
        "logs/": {"bytes": LOG_BYTES_PER_RUN, "large_objects": 0},
    }


def batch_storage(
    workload: Workload, region: str, prices: PriceBook, originals_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """What one night's data costs over its whole stay in the lake, per area (USD): storage day by day in
    its class (small objects Standard), plus Intelligent-Tiering's monitoring and the lifecycle's transition
    requests. At steady state a month's storage bill is this x the nights of a month. `originals_s`: see
    `resident_days`."""
    entry = prices.region(region)
    classes = entry["s3_classes_gb_month"]
    result = {}
    for prefix, volume in area_volumes(workload).items():
        plan = STORAGE_PLAN[prefix]
        days = resident_days(plan, workload, originals_s)
        gb = volume["bytes"] / 1e9
        # Objects that go before the transition day (originals past a short window) never move.
        moved = volume["large_objects"] if plan.transition_days is not None and days > plan.transition_days else 0
        billed = plan if moved else replace(plan, storage_class=STANDARD, transition_days=None)  # too small to move
        stored = gb * sum(classes[class_price_key(billed, age)] * share for age, share in enumerate(day_shares(days)))
        stored /= DAYS_PER_MONTH
        transitions = moved / 1000 * entry["s3_transition_per_1000"][plan.storage_class] if moved else 0.0
        monitoring = 0.0
        if plan.storage_class == INTELLIGENT_TIERING and moved:
            months_in_tiering = (days - plan.transition_days) / DAYS_PER_MONTH
            per_object_month = entry["s3_intelligent_tiering_monitoring_per_1000_objects_month"] / 1000
            monitoring = moved * per_object_month * months_in_tiering
        result[prefix] = {
            "gb": round(gb, 6),
            "storage_class": plan.storage_class if moved else STANDARD,
            "transition_days": plan.transition_days if moved else None,
            "resident_days": days,
            "usd": stored + transitions + monitoring,
        }
    return result


def fixed_monthly(
    region: str,
    prices: PriceBook,
    *,
    network: str = NETWORK_PATHS[0],
    airflow_host: str = AIRFLOW_HOST_TYPE,
    nodes_per_night: int = 3,
) -> dict[str, float]:
    """The month's costs that do not depend on the photos: the lake's KMS key, the Airflow host (instance +
    gp3 volume + public IPv4, all month), the cluster's network path, the interface endpoints (per AZ-hour
    + per GB)."""
    entry = prices.region(region)
    hosts = entry["airflow_host_hourly"]
    if airflow_host not in hosts:
        raise ValueError(f"no price for Airflow host {airflow_host!r} in {region}: one of {sorted(hosts)}")
    if network not in NETWORK_PATHS:
        raise ValueError(f"network path must be one of {NETWORK_PATHS}, not {network!r}")
    nat = 0.0
    if network == "nat-gateway":
        downloads = nodes_per_night * NAT_BOOT_DOWNLOAD_GB_PER_NODE * DAYS_PER_MONTH
        nat = HOURS_PER_MONTH * entry["nat_gateway_hourly"] + downloads * entry["nat_gateway_per_gb"]
    endpoint_hours = sum(INTERFACE_ENDPOINTS.values()) * HOURS_PER_MONTH
    endpoint_gb = len(INTERFACE_ENDPOINTS) * nodes_per_night * INTERFACE_ENDPOINT_GB_PER_NODE * DAYS_PER_MONTH
    return {
        "kms_key": entry["kms_key_month"],
        "airflow_host": HOURS_PER_MONTH * hosts[airflow_host] + AIRFLOW_HOST_EBS_GIB * entry["ebs_gp3_gb_month"],
        "airflow_public_ipv4": HOURS_PER_MONTH * AIRFLOW_HOST_PUBLIC_IPV4 * entry["public_ipv4_hourly"],
        "network_path": nat,
        "interface_endpoints": endpoint_hours * entry["interface_endpoint_az_hourly"]
        + endpoint_gb * entry["interface_endpoint_per_gb"],
    }


def night_workload(workload: Workload, night: int, *, refit: bool = False) -> Workload:
    """The `night`-th consecutive night of `workload.images` photos: the upload reads the manifests of the
    batches still retained; a refit merges the statistics of the retained batches, this one included."""
    if night < 1:
        raise ValueError("--night counts from 1")
    # The first night fits the first basis from its own statistics: a refit of one batch.
    window = min(night, RETENTION_DAYS) if refit or night == 1 else workload.refit_batches
    return replace(workload, earlier_batches=min(night - 1, RETENTION_DAYS - 1), refit_batches=window)


def steady_state_month(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    overheads: Overheads = Overheads(),
    network: str = NETWORK_PATHS[0],
    airflow_host: str = AIRFLOW_HOST_TYPE,
    spot_core: bool = False,
) -> dict[str, Any]:
    """The whole bill of a month once retention is full, at `workload.images` photos a night: every night's
    processing, each area's storage in its class, the fixed costs; every assumption named. A refit or a
    re-expression in `workload` is counted once in the month, the other nights project only. spot_core: see
    `fleet_markets`."""
    check_region(region)
    plain = replace(night_workload(workload, RETENTION_DAYS), refit_batches=0, reexpress_rows=0, catchup_images=0)
    nightly = estimate_emr(plain, sizing, region=region, prices=prices, overheads=overheads, spot_core=spot_core)
    landing_usd = nightly["cost"]["components_usd"].get("s3_landing_storage", 0.0)
    night_usd = sum(v for k, v in nightly["cost"]["components_usd"].items() if k != "s3_storage") - landing_usd
    extra_usd = 0.0
    if workload.refit_batches or workload.reexpress_rows or workload.catchup_images:
        special = estimate_emr(
            night_workload(workload, RETENTION_DAYS),
            sizing,
            region=region,
            prices=prices,
            overheads=overheads,
            spot_core=spot_core,
        )
        extra_usd = sum(v for k, v in special["cost"]["components_usd"].items() if k != "s3_storage") - night_usd
    originals_s = originals_seconds(nightly["seconds"])
    areas = batch_storage(plain, region, prices, originals_s)
    area_storage = {prefix: area["usd"] * DAYS_PER_MONTH for prefix, area in areas.items()}
    fixed = fixed_monthly(
        region,
        prices,
        network=network,
        airflow_host=airflow_host,
        nodes_per_night=1 + sizing.core_count + sizing.task_count,
    )
    parts = {
        "processing": night_usd * DAYS_PER_MONTH + extra_usd,
        **{f"storage {prefix}": usd for prefix, usd in area_storage.items()},
        **({"storage landing": landing_usd * DAYS_PER_MONTH} if landing_usd else {}),
        **{f"fixed {name}": usd for name, usd in fixed.items()},
    }
    total = sum(parts.values())
    # The app's own PutObject of each photo into an s3:// landing: paid whatever the pipeline does, shown apart.
    put_price = prices.unit(region, "s3_put_per_1000")
    app_uploads = workload.images * DAYS_PER_MONTH / 1000 * put_price if workload.landing_on_s3 else 0.0
    return {
        "images_per_night": workload.images,
        "region": region,
        "photo_mix": workload.photo_mix,
        "monthly_usd": round(total, 2),
        "monthly_usd_pipeline": round(total, 2),
        "app_uploads_usd": round(app_uploads, 2),
        "monthly_eur": round(total * prices.eur_per_usd, 2),
        "components_usd": {k: round(v, 4) for k, v in parts.items()},
        "storage_gb": {prefix: round(area["gb"] * area["resident_days"], 1) for prefix, area in areas.items()},
        "storage_classes": {
            prefix: {
                "class": area["storage_class"],
                "after_days": area["transition_days"],
                "resident_days": area["resident_days"],
                "read_by": STORAGE_PLAN[prefix].read_by,
            }
            for prefix, area in areas.items()
        },
        "assumptions": [
            (
                f"{DAYS_PER_MONTH:.2f} nights a month, one batch a night, each night {workload.images:,} photos of "
                f"{workload.mean_image_bytes:,.0f} bytes"
            ),
            (
                f"retention full: {RETENTION_DAYS} nights retained (logs {LOG_RETENTION_DAYS}), each object billed "
                f"{NONCURRENT_GRACE_DAYS} more days as a noncurrent version"
            ),
            "nightly PCA reads only the new batch (statistics + projection); "
            + ("one refit/re-expression night in the month" if extra_usd else "no refit or re-expression this month"),
            (
                f"Intelligent-Tiering: objects not read after their first night (Frequent 30 d, Infrequent to 90 d, "
                f"then Archive Instant); the PCA's outputs in {OUTPUT_OBJECT_BYTES / 1e6:.0f} MB parts, featurize's "
                f"in {featurize_output_files(plain):,} files a night (one per input split of at most "
                f"{SPARK_MAX_SPLIT_BYTES / 2**20:.0f} MiB of bundles, at least "
                f"{OUTPUT_OBJECT_BYTES / 1e6:.0f} MB parts)"
            ),
            (
                f"cluster: 1 {sizing.primary_types[0]} + {sizing.core_count + sizing.task_count} "
                f"{sizing.worker_types[0]}; each step lasts the longer of its CPU work and its S3 bytes over the "
                f"workers' baseline bandwidth ({sizing.worker_facts.network_gbps:g} Gbps each way a worker)"
            ),
            (
                f"per photo: features {workload.feature_bytes:,.0f} B, "
                f"reduced Parquet {workload.reduced_bytes:,.0f} B, "
                f"CSV {workload.csv_bytes:,.0f} B, index {INDEX_BYTES_PER_PHOTO:,.0f} B; statistics "
                f"{STATS_BYTES_PER_BATCH / 1e6:.1f} MB a batch; EMR logs {LOG_BYTES_PER_RUN / 1e6:.0f} MB a run"
            ),
            "KMS: one customer-managed key; its requests are few with S3 Bucket Keys (not counted)",
            f"Airflow host: one {airflow_host} On-Demand {HOURS_PER_MONTH:.0f} h + {AIRFLOW_HOST_EBS_GIB} GiB gp3"
            + (
                " (sized for the night: ingestion runs on the cluster, the host only lists, plans and waits)"
                if workload.ingest_per_vcpu
                else ""
            ),
            *(
                [
                    f"photo mix {workload.photo_mix}: "
                    + (
                        f"ingest {workload.ingest_per_vcpu:.1f}"
                        if workload.ingest_per_vcpu
                        else "ingest on the Airflow worker,"
                    )
                    + f" and featurize {workload.throughput_per_vcpu:.1f} photos/s per vCPU; "
                    + (
                        f"the ingest pass decodes {workload.decoded_share:.0%} of the photos (stored bytes more than "
                        f"their {PIXELS_BYTES:,} B of model pixels): featurize reads "
                        f"{workload.featurize_bytes_per_photo:,.0f} B a photo of the bundles; "
                        if workload.decoded_share
                        else "featurize reads and decodes each stored photo; "
                    )
                    + (
                        (
                            "the decoded photos' pixels and derivatives (not their bytes)"
                            if workload.decoded_share
                            else "originals"
                        )
                        + f" removed by the run that commits their features (~{originals_s / 3600:.1f} h)"
                        if workload.original_retention_days == 0
                        else f"originals kept {workload.original_retention_days} day(s)"
                    )
                    + f", derivatives ({workload.derivative_bytes:,.0f} B) the retention; the landing holds each "
                    f"photo {workload.landing_days:g} day on average; the app's uploads ({app_uploads:,.2f} USD) "
                    "apart, not the pipeline's"
                ]
                if workload.photo_mix
                else []
            ),
            f"network path: {network}"
            + (
                " (free)"
                if network == "s3-gateway-endpoint"
                else f" up all month + {NAT_BOOT_DOWNLOAD_GB_PER_NODE:g} GB of downloads per node per night"
            ),
            (
                "interface endpoints (per AZ-hour all month + per GB): "
                + ", ".join(f"{name} in {azs} AZ" for name, azs in INTERFACE_ENDPOINTS.items())
                + f"; the Airflow host's {AIRFLOW_HOST_PUBLIC_IPV4} public IPv4 address"
            ),
            "not counted: data transfer (none leaves the region), CloudWatch"
            + ("" if workload.landing_days else ", the landing's own storage"),
        ],
    }


# ---------------------------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------------------------


def step_bytes(workload: Workload) -> dict[str, float]:
    """Bytes each step moves between S3 and the workers, the busier direction (an instance's bandwidth holds each
    way): ingest reads the landing and writes the bundles (the stored photos, and the decoded columns of those it
    decodes), featurize reads of the bundles the decoded columns or the photo (a fused featurize: the landing,
    once) and writes features and derivatives, the PCA reads tonight's features twice (statistics, projection), a
    re-expression reads the retained features once."""
    images, rows = workload.featurized_images, workload.pca_row_count
    moved = {}
    landing = images * (workload.landing_image_bytes or workload.mean_image_bytes)
    if workload.ingest_per_vcpu and not workload.ingest_fused:
        moved["ingest_s"] = max(landing, images * workload.bundle_row_bytes)
    written = images * (workload.feature_bytes + workload.derivative_bytes)
    bundles = images * workload.featurize_bytes_per_photo
    moved["featurize_s"] = max(landing if workload.ingest_fused else bundles, written)
    moved["pca_s"] = max(2 * rows * workload.feature_bytes, rows * (workload.reduced_bytes + workload.csv_bytes))
    if workload.reexpress_rows:
        moved["reexpress_s"] = workload.reexpress_rows * workload.feature_bytes
    return moved


def network_bytes_per_s(sizing: ClusterSizing) -> float | None:
    """What the workers move to and from S3 together, per second and direction (their baseline bandwidth)."""
    gbps = sizing.worker_facts.network_gbps
    return None if gbps is None else (sizing.core_count + sizing.task_count) * gbps * 1e9 / 8


def job_seconds(
    workload: Workload, vcpus: int, overheads: Overheads, bytes_per_s: float | None = None
) -> dict[str, float]:
    """Each step's seconds on `vcpus` executor vCPUs moving `bytes_per_s` to/from S3 (None: not bounded): the
    longer of its CPU work and its bytes over the network (reads and work overlap across a node's tasks), + the
    step's fixed overhead."""
    if vcpus <= 0:
        raise ValueError("no executor vCPUs")
    if workload.pca_stats_rows_per_s_per_vcpu is None or workload.pca_project_rows_per_s_per_vcpu is None:
        raise ValueError(f"no PCA rates: {workload.pca_rate_source}")
    # Statistics and projection: one pass each over tonight's rows; a refit adds the merge of stored statistics.
    rows = workload.pca_row_count
    stats_rate = workload.pca_stats_rows_per_s_per_vcpu * vcpus
    project_rate = workload.pca_project_rows_per_s_per_vcpu * vcpus
    work = {}
    ingest_cpu = 0.0
    if workload.ingest_per_vcpu:  # ingestion on the cluster (issue 22): its own step, or featurize's first work
        ingest_cpu = workload.featurized_images / (workload.ingest_per_vcpu * vcpus)
        if not workload.ingest_fused:
            work["ingest_s"] = ingest_cpu
    work["featurize_s"] = workload.featurized_images / (workload.throughput_per_vcpu * vcpus)
    if workload.ingest_fused:
        work["featurize_s"] += ingest_cpu
    work["pca_s"] = rows / stats_rate + rows / project_rate
    if workload.reexpress_rows:
        work["reexpress_s"] = workload.reexpress_rows / project_rate
    moved = step_bytes(workload)
    seconds = {
        step: max(cpu, moved[step] / bytes_per_s if bytes_per_s else 0.0) + overheads.step_s
        for step, cpu in work.items()
    }
    seconds["pca_s"] += refit_seconds(workload.refit_batches)
    return seconds


def network_bound_steps(workload: Workload, vcpus: int, overheads: Overheads, bytes_per_s: float | None) -> list[str]:
    """The steps whose bytes, not their CPU work, set their time."""
    free = job_seconds(workload, vcpus, overheads)
    bound = job_seconds(workload, vcpus, overheads, bytes_per_s)
    return [step.removesuffix("_s") for step in bound if bound[step] > free[step]]


def refit_seconds(batches: int) -> float:
    """Reading and summing `batches` stored statistics on the driver, then the eigendecomposition."""
    if not batches:
        return 0.0
    return batches * STATS_BYTES_PER_BATCH / STATS_READ_BYTES_PER_S + EIGEN_SECONDS


def fleet_markets(sizing: ClusterSizing, *, spot_core: bool = False) -> dict[str, str]:
    """The market of each fleet: primary and core always On-Demand (the core nodes host the YARN application
    master, i.e. the Spark driver: a spot loss there kills the step), task nodes on spot when sizing.spot.
    spot_core: every worker on spot, core nodes too (a change the levers price; the cluster request never asks it)."""
    workers = SPOT if sizing.spot or spot_core else ON_DEMAND
    return {"MASTER": ON_DEMAND, "CORE": SPOT if spot_core else ON_DEMAND, "TASK": workers}


def emr_instances(sizing: ClusterSizing, seconds: float, *, spot_core: bool = False) -> list[BilledInstances]:
    """The cluster a ClusterSizing asks for, priced with each fleet's first (preferred) type."""
    markets = fleet_markets(sizing, spot_core=spot_core)
    worker_ebs = sizing.worker_ebs_gib + EMR_ROOT_VOLUME_GIB
    return [
        BilledInstances(
            "MASTER",
            sizing.primary_types[0],
            markets["MASTER"],
            1,
            seconds,
            sizing.primary_ebs_gib + EMR_ROOT_VOLUME_GIB,
        ),
        BilledInstances("CORE", sizing.worker_types[0], markets["CORE"], sizing.core_count, seconds, worker_ebs),
        BilledInstances("TASK", sizing.worker_types[0], markets["TASK"], sizing.task_count, seconds, worker_ebs),
    ]


def run_sizing(workload: Workload, sizing: ClusterSizing) -> ClusterSizing:
    """The cluster a night runs on: one ingested on the cluster on what its landing's bytes and photo count size,
    as the plan does from its listing (sized_for_night); otherwise `sizing` as asked."""
    if not workload.ingest_per_vcpu:
        return sizing
    landing = round(workload.images * (workload.landing_image_bytes or 0))
    return sized_for_night(sizing, landing, workload.images, workload.keeps_decoded_photos)


def estimate_emr(
    workload: Workload,
    sizing: ClusterSizing,
    *,
    region: str,
    prices: PriceBook,
    overheads: Overheads = Overheads(),
    eur_per_usd: float | None = None,
    spot_core: bool = False,
    as_asked: bool = False,
) -> dict[str, Any]:
    """Wall time and cost of one transient-cluster run (JSON-ready: the DAG passes it to the run report). A night
    ingested on the cluster runs on the cluster its landing's bytes size, as the plan does (sized_for_night), unless
    `as_asked` (the sizing's own counts, to compare them). spot_core: see `fleet_markets`."""
    check_region(region)
    sizing = sizing if as_asked else run_sizing(workload, sizing)
    vcpus = worker_vcpus(sizing)
    bandwidth = network_bytes_per_s(sizing)
    steps = job_seconds(workload, vcpus, overheads, bandwidth)
    cluster_s = overheads.startup_s + overheads.bootstrap_s + sum(steps.values()) + overheads.termination_s
    instances = emr_instances(sizing, cluster_s, spot_core=spot_core)
    seconds = {
        **{k: round(v, 1) for k, v in steps.items()},
        "startup_s": overheads.startup_s,
        "bootstrap_s": overheads.bootstrap_s,
        "termination_s": overheads.termination_s,
        "wall_s": round(cluster_s, 1),
    }
    components = {
        **instance_costs(instances, region, prices),
        **s3_costs(workload, region, prices, originals_seconds(seconds)),
    }
    return {
        "kind": "emr",
        "region": region,
        "images": workload.images,
        "throughput_per_vcpu": workload.throughput_per_vcpu,
        "throughput_source": workload.throughput_source,
        "executor_vcpus": vcpus,
        "instances": [asdict(i) for i in instances if i.count],
        "network": {
            "worker_baseline_gbps": sizing.worker_facts.network_gbps,
            "bytes": {k.removesuffix("_s"): round(v) for k, v in step_bytes(workload).items()},
            "bound_steps": network_bound_steps(workload, vcpus, overheads, bandwidth),
        },
        "spot_price": (
            prices.spot_price_source(region, sizing.worker_types[0])
            if spot_core or (sizing.spot and sizing.task_count)
            else None
        ),
        "pca_rates": {
            "stats_rows_per_s_per_vcpu": workload.pca_stats_rows_per_s_per_vcpu,
            "project_rows_per_s_per_vcpu": workload.pca_project_rows_per_s_per_vcpu,
            "source": workload.pca_rate_source,
        },
        "rows": {
            "featurized": workload.featurized_images,
            "pca_read": workload.pca_row_count,
            "reexpressed": workload.reexpress_rows,
            "refit_batches_merged": workload.refit_batches,
        },
        "seconds": seconds,
        "s3": s3_layout(workload),
        "s3_requests_usd": s3_request_costs(workload, region, prices),
        "cost": summarize(components, workload.images, eur_per_usd or prices.eur_per_usd),
        "processing_usd_per_million": processing_per_million(components, workload.images),
        "storage_basis": storage_basis(workload),
        "prices": prices.stamp,
    }


# The components of a run that are storage (the batch's stay; a new basis' outputs starting their tiers again).
STORAGE_COMPONENTS = ("s3_storage", "s3_new_basis_tiers", "s3_landing_storage")


def processing_per_million(components: dict[str, float], images: int) -> float | None:
    """Compute + S3 requests (and retrievals) of a run, everything but storage, per million of tonight's photos."""
    if not images:
        return None
    return round(sum(v for k, v in components.items() if k not in STORAGE_COMPONENTS) / images * 1e6, 4)


def estimate_for_run(
    images: int,
    sizing: ClusterSizing,
    *,
    region: str,
    pca_rows: int | None = None,
    landing_on_s3: bool = False,
    prices: PriceBook | None = None,
    reexpress_rows: int = 0,
    catchup_images: int = 0,
    refit_batches: int = 0,
) -> dict[str, Any]:
    """The estimate the DAG makes before creating the cluster: the benchmark's throughput, the prices
    file, this run's image count, landing and sizing (JSON-ready, for XCom and the run report).
    pca_rows: feature rows the PCA step reads (default: images + catchup_images); reexpress_rows: rows
    of retained batches projected on a new basis; catchup_images: earlier nights' photos featurized too;
    refit_batches: stored statistics a refit merges."""
    throughput, source = default_throughput()
    workload = Workload(
        images=images,
        throughput_per_vcpu=throughput,
        throughput_source=source,
        pca_rows=pca_rows,
        landing_on_s3=landing_on_s3,
        reexpress_rows=reexpress_rows,
        catchup_images=catchup_images,
        refit_batches=refit_batches,
    )
    return estimate_emr(workload, sizing, region=region, prices=prices or PriceBook.load())


# ---------------------------------------------------------------------------------------------
# Tables (the run report and the cost commands print them)
# ---------------------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return "" if value is None else str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cost_rows(cost: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(component, USD, EUR) rows of a `summarize` result, total and per-image figures last."""
    rate = cost["eur_per_usd"]
    rows = [(name, usd, usd * rate) for name, usd in cost["components_usd"].items()]
    rows.append(("**total**", cost["total_usd"], cost["total_eur"]))
    if cost["per_1000_images_usd"] is not None:
        rows.append(("per 1,000 images", cost["per_1000_images_usd"], cost["per_1000_images_usd"] * rate))
        rows.append(("per million images", cost["per_million_images_usd"], cost["per_million_images_usd"] * rate))
    return rows


# The budget alarm's threshold (infra/foundation.yaml MonthlyBudgetUsd): the steady-state month at this many
# photos a night, plus a margin for a refit night and the spot price moving, rounded up to 10 USD.
BUDGET_IMAGES_PER_NIGHT = 1_000_000
BUDGET_MARGIN = 0.25


def monthly_budget_usd(month_usd: float) -> int:
    """The budget for a modelled month of `month_usd` (`steady_state_month(...)["monthly_usd"]`)."""
    return int(math.ceil(month_usd * (1 + BUDGET_MARGIN) / 10.0) * 10)
