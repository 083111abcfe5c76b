"""The cost model's command: what a night costs, the bill of a year, the comparisons, the prices refresh.

    python -m fruits.cli.costs estimate --images 1000000 [--night 365] [--refit] [--json]   # one night
    python -m fruits.cli.costs bill [--images 1000000]     # night 1 vs 365, the month at 10k/100k/1M (make cost)
    python -m fruits.cli.costs compare --images 1000000    # optimizations and break-evens (docs/costs.md)
    python -m fruits.cli.costs refresh [--spot]            # rewrite the prices file from AWS's APIs

USD as AWS bills it, EUR beside; prices from fruits/prices/aws_eu.json, throughputs from benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fruits import cost_compare, price_refresh
from fruits.costs import (
    AIRFLOW_HOST_TYPE,
    LANDING_DAYS,
    NETWORK_PATHS,
    PHOTO_MIXES,
    PRICES_FILE,
    PriceBook,
    Workload,
    default_throughput,
    estimate_emr,
    instance_facts,
    night_workload,
    photo_mix,
    steady_state_month,
)
from fruits.emr_cluster import ARCHITECTURES, ClusterSizing
from fruits.gdpr import EU_MEMBER_STATE_REGIONS
from fruits.settings import PipelineSettings


def workload_of(args: argparse.Namespace) -> Workload:
    mix = photo_mix(args.photo_mix) if args.photo_mix else None
    if args.throughput_per_vcpu is not None:
        throughput, source = args.throughput_per_vcpu, "given on the command line"
    elif mix:
        throughput, source = mix.featurize_per_vcpu, mix.source
    else:
        throughput, source = default_throughput()
    classes = {}
    if mix:  # the night ingests on the cluster and keeps issue 22's copies; the app's phones upload to S3
        classes = {
            "photo_mix": mix.name,
            "ingest_per_vcpu": mix.ingest_per_vcpu,
            "derivative_bytes": mix.derivative_bytes,
            "decoded_share": mix.decoded_share,
            "decoded_bytes": mix.decoded_bytes,
            "decoded_stripped_bytes": mix.decoded_stripped_bytes,
            "decoded_landing_bytes": mix.decoded_landing_bytes,
            "featurize_read_bytes": mix.featurize_read_bytes,
            "original_retention_days": args.original_retention_days,
            "landing_image_bytes": mix.original_bytes,
        }
    if mix:  # thumbnails too: whatever their size, the app's photos land in S3
        classes["landing_days"] = LANDING_DAYS
        args.landing_on_s3 = True
    mean_image_bytes = args.mean_image_bytes or (mix.stripped_bytes if mix else Workload.mean_image_bytes)
    return Workload(
        images=args.images,
        throughput_per_vcpu=throughput,
        throughput_source=source,
        pca_rows=args.pca_rows,
        images_per_object=args.images_per_object,
        landing_on_s3=args.landing_on_s3,
        storage_months=args.storage_months,
        mean_image_bytes=mean_image_bytes,
        feature_bytes=args.feature_bytes,
        reduced_bytes=args.reduced_bytes,
        csv_bytes=args.csv_bytes,
        reexpress_rows=args.reexpress_rows,
        catchup_images=args.catchup_images,
        **classes,
    )


def original_days(text: str) -> int:
    """fruits_original_retention_days as the settings accept it: 0 to the retention."""
    days = int(text)
    if not 0 <= days <= PipelineSettings.retention_days:
        raise argparse.ArgumentTypeError(f"between 0 and {PipelineSettings.retention_days}, not {days}")
    return days


def sizing_of(args: argparse.Namespace) -> ClusterSizing:
    workers = (args.instance_type,) if args.instance_type else ()
    architecture = instance_facts(args.instance_type).architecture if args.instance_type else args.architecture
    return ClusterSizing(
        architecture=architecture,
        core_count=args.core,
        task_count=args.task,
        spot=not args.on_demand,
        worker_instance_types=workers,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fruits.cli.costs",
        description="Fruits! cost model (USD as AWS bills, EUR beside).",
        epilog="estimate: one night's run (+ --json: processing_usd_per_million, monthly_usd_steady_state); "
        "bill: night 1 beside night 365 and the steady-state month at 10 k, 100 k and 1 M photos a night "
        "against issue 11's targets (make cost); compare: optimizations, right-sizing, alternatives; "
        "refresh: the prices file from AWS.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "estimate": "one night's run: wall time, USD and EUR by component; --json adds the steady-state month",
        "bill": "the bill of a year: processing per night (1, 30, 365), the monthly bill at 10k/100k/1M "
        "photos a night, issue 11's targets",
        "compare": "the optimizations chosen, right-sizing and the alternatives (EMR Serverless, one instance)",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--images",
            type=int,
            required=name != "bill",
            default=1_000_000,
            help="photos a night (bill: default 1,000,000)",
        )
        p.add_argument(
            "--night",
            type=int,
            default=1,
            help="the Nth consecutive night of --images photos a night (manifests read, refit window)",
        )
        p.add_argument(
            "--refit",
            action="store_true",
            help="tonight fits a new basis from the stored statistics of min(night, 365) batches",
        )
        p.add_argument(
            "--reexpress-rows",
            type=int,
            default=0,
            help="rows of retained batches projected again on a new basis tonight (default 0: no new basis)",
        )
        p.add_argument(
            "--catchup-images",
            type=int,
            default=0,
            help="photos of earlier nights without committed features featurized by this run too",
        )
        p.add_argument(
            "--mean-image-bytes",
            type=float,
            default=None,
            help="mean photo size in bytes: drives raw/ and the bundles (default: the --photo-mix's, else "
            f"Fruits-360's {Workload.mean_image_bytes:,.0f}; a phone: ~3e6)",
        )
        p.add_argument(
            "--photo-mix",
            choices=sorted(PHOTO_MIXES),
            default=None,
            help="price a night of this photo mix from benchmarks/results/photo_classes.json (phone: 70 %% 12-MP "
            "JPEG, 30 %% HEIC, uploaded by the app to an s3:// landing, ingested on the cluster, originals removed "
            "by the run that commits their features or kept fruits_original_retention_days, derivatives the "
            "retention; thumbnail: today's Fruits-360 night)",
        )
        p.add_argument(
            "--original-retention-days",
            type=original_days,
            metavar="N",
            default=PipelineSettings.original_retention_days,
            help="with --photo-mix: the originals' days in raw/ (fruits_original_retention_days; 0: removed by the "
            f"run that commits their features; default {PipelineSettings.original_retention_days})",
        )
        p.add_argument("--feature-bytes", type=float, default=Workload.feature_bytes, help="features row per photo")
        p.add_argument(
            "--reduced-bytes",
            type=float,
            default=Workload.reduced_bytes,
            help="reduced Parquet per photo (per-batch PCA output)",
        )
        p.add_argument("--csv-bytes", type=float, default=Workload.csv_bytes, help="pca_matrix/ CSV per photo")
        p.add_argument(
            "--throughput-per-vcpu",
            type=float,
            default=None,
            help="featurize images/s per executor vCPU (default: the benchmark's measurement)",
        )
        p.add_argument("--instance-type", default=None, help="worker (core/task) type; default: ClusterSizing's first")
        p.add_argument(
            "--architecture",
            default=ClusterSizing.architecture,
            choices=ARCHITECTURES,
            help="the nodes' architecture (default: Graviton)",
        )
        p.add_argument("--core", type=int, default=ClusterSizing.core_count, help="core nodes (always On-Demand)")
        p.add_argument(
            "--task", type=int, default=ClusterSizing.task_count, help="task nodes (spot unless --on-demand)"
        )
        p.add_argument("--on-demand", action="store_true", help="task nodes On-Demand instead of spot")
        p.add_argument(
            "--region",
            default=PipelineSettings.region,
            choices=EU_MEMBER_STATE_REGIONS,
            help="an EU member-state region (GDPR allow-list)",
        )
        p.add_argument(
            "--pca-rows",
            type=int,
            default=None,
            help="feature rows the PCA reads tonight (default: --images + --catchup-images)",
        )
        p.add_argument(
            "--images-per-object",
            type=int,
            default=None,
            help="photos per S3 object (default: bundles as fruits.upload writes them; "
            "1: one object per photo, the layout before bundles)",
        )
        p.add_argument(
            "--landing-on-s3",
            action="store_true",
            help="the photos land on an s3:// prefix (1 GET per photo; default: a local landing folder)",
        )
        p.add_argument(
            "--storage-months",
            type=float,
            default=None,
            help="charge the run N months of S3 Standard for its photos + features instead of its whole "
            "stay in the lake in each area's class (0: processing only)",
        )
        p.add_argument(
            "--network",
            choices=NETWORK_PATHS,
            default=NETWORK_PATHS[0],
            help="the cluster's path to S3 (default: the free gateway endpoint; nat-gateway: priced)",
        )
        p.add_argument("--airflow-host", default=AIRFLOW_HOST_TYPE, help="instance type of the Airflow host")
        p.add_argument("--eur-per-usd", type=float, default=None, help="conversion rate (default: the prices file's)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--single-instance-type", default="c7g.16xlarge", help="compare: the one-instance alternative")
    text = "rewrite the prices file from the AWS Price List API (credentials allowed pricing:GetProducts)"
    refresh = sub.add_parser("refresh", help=text, description=text)
    refresh.add_argument("--region", action="append", choices=EU_MEMBER_STATE_REGIONS, help="default: every EU region")
    refresh.add_argument("--instance-type", action="append", help="default: the types already in the file")
    refresh.add_argument(
        "--spot", action="store_true", help="also sample current spot prices (EC2 DescribeSpotPriceHistory)"
    )
    refresh.add_argument("--prices-file", type=Path, default=PRICES_FILE, help="the prices file to rewrite")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.command == "refresh":
        price_refresh.refresh(
            args.prices_file, regions=args.region or (), instance_types=args.instance_type or (), spot=args.spot
        )
        return 0
    prices = PriceBook.load()
    if args.eur_per_usd:
        prices.document["eur_per_usd"] = {**prices.document["eur_per_usd"], "rate": args.eur_per_usd}
    workload, sizing = workload_of(args), sizing_of(args)
    if args.command == "estimate":
        tonight = night_workload(workload, args.night, refit=args.refit)
        estimate = estimate_emr(tonight, sizing, region=args.region, prices=prices)
        month = steady_state_month(
            tonight, sizing, region=args.region, prices=prices, network=args.network, airflow_host=args.airflow_host
        )
        estimate = {
            **estimate,
            "night": args.night,
            "monthly_usd_steady_state": month["monthly_usd"],
            "steady_state_month": month,
        }
        if args.json:
            print(json.dumps(estimate, indent=2))
        else:
            print(
                cost_compare.render_estimate(estimate) + f"\n\nnight {args.night}: processing "
                f"{estimate['processing_usd_per_million']} USD per million; steady-state month "
                f"{month['monthly_usd']:,.2f} USD ({month['monthly_eur']:,.2f} EUR): `bill` for the breakdown"
            )
    elif args.command == "bill":
        bill = cost_compare.year_bill(
            workload, sizing, region=args.region, prices=prices, network=args.network, airflow_host=args.airflow_host
        )
        print(json.dumps(bill, indent=2) if args.json else cost_compare.render_year(bill))
    else:
        print(
            cost_compare.compare_report(
                workload, sizing, region=args.region, prices=prices, single_instance_type=args.single_instance_type
            )
        )
    print(
        f"\nprices: {prices.stamp['source'][:110]}... stamped {prices.stamp['stamped']}, values as of "
        f"{prices.stamp['values_as_of']}; EUR at {prices.eur_per_usd} per USD",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
