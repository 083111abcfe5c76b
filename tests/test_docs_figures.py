"""Every throughput, cost and quality figure the README, the docs and the deck quote is the measurement's or the
cost model's own: a new benchmark result, price or model change that is not carried into the pages fails here.

Sources: benchmarks/results/*.json (inference_throughput, pca_throughput, quality) and the cost model's output
(`python -m fruits.cli.costs bill --json`, the same with `--photo-mix phone` and `--photo-mix thumbnail`,
`compare`). Each quoted figure is listed below with the function that
formats it from its source, in the page's language (French decimals in the deck); the cost tables of
docs/costs.md are generated blocks compared whole; figures known to be stale must not come back. Cheap: no
Spark, no TensorFlow (the cost model runs three times, a few seconds).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DECK = REPO / "docs" / "presentation" / "fruits_pipeline.md"
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md", REPO / "benchmarks" / "README.md", DECK]

# Figures of earlier cost models and fits, quoted by earlier versions of the pages: none may come back.
STALE = (
    "0.4679",
    "0,4679",
    "0.2617",
    "0,2617",
    "0.47 USD",
    "0,47 USD",
    "0.26 USD",
    "0,26 USD",
    "292,107",
    "292 000",
    "292k",
    "~292",
    "core on spot",
    "16,90 USD",
    "16.90 USD",
    "302 tests",
    # The ingest job's second read of a night bigger than the workers' disks (gone: it reads the landing once).
    "HOLD_MAX_BYTES",
    "INGEST_PASSES",
    "226.18",
    "226,18",
    "3.1591",
    "5.71 TB",
    # featurize reading the phone photos' bundles back (gone: the ingest pass decodes them, featurize reads pixels).
    "NIGHT_NETWORK_PASSES",
    "featurize_rereads_bundles",
    "featurize takes the photos from the ingest pass",
)


def _load_figures_module():
    spec = importlib.util.spec_from_file_location("deck_figures", REPO / "docs" / "presentation" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _load_figures_module()


def en(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def fr(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}".replace(",", "\u202f").replace(".", ",")


def percent(value: float) -> float:
    return value * 100


@pytest.fixture(scope="module")
def sources() -> dict:
    def read(name):
        return json.loads((RESULTS / f"{name}.json").read_text())

    def mix(name):
        return json.loads(figures.module_output([*figures.cost_command(), "bill", "--photo-mix", name, "--json"]))

    bill = figures.cost_bill()
    inference = read("inference_throughput")
    return {
        "bill": bill,
        "phone": mix("phone"),
        "thumbnail": mix("thumbnail"),
        "inference": inference,
        "pca": read("pca_throughput"),
        "quality": read("quality"),
        "night": {str(n["night"]): n for n in bill["nights"]},
        "month": {int(k): v for k, v in bill["months"].items()},
        "featurize_ratio": inference["featurize_end_to_end"]["images_per_second"]
        / inference["best_single_process"]["images_per_second"],
    }


def claims(s: dict) -> dict[str, list[str]]:
    """page -> the exact strings it must contain, formatted from the sources."""
    inference, quality, pca, month = s["inference"], s["quality"], s["pca"], s["month"]
    e2e = inference["featurize_end_to_end"]["images_per_second"]
    best = inference["best_single_process"]["images_per_second"]
    textbook = inference["textbook_pandas_udf_keras"]["images_per_second"]
    vs_textbook = inference["ratios"]["featurize_vs_textbook"]
    per_vcpu = inference["images_per_second_per_vcpu"]
    processing = s["night"]["1"]["processing_usd_per_million"]
    wall = s["night"]["1"]["wall_minutes"]
    phone, thumbnail = s["phone"], s["thumbnail"]
    phone_wall, thumbnail_wall = phone["nights"][0]["wall_minutes"], thumbnail["nights"][0]["wall_minutes"]
    phone_raw_day = phone["months"]["1000000"]["components_usd"]["storage raw/"]
    thumbnail_month = thumbnail["months"]["1000000"]["monthly_usd"]
    return {
        "README.md": [
            f"{en(e2e, 1)} images/s",
            f"{en(s['featurize_ratio'], 2)} x",
            f"{en(vs_textbook, 2)} x",
            *(f"{en(month[n]['monthly_usd'], 2)} USD" for n in (10_000, 100_000, 1_000_000)),
            f"{en(processing, 2)} USD per million",
            f"k = {quality['k']}",
            f"{en(percent(quality['one_nn_pca']), 2)} %",
            f"{en(pca['stats_vs_numpy_ceiling'], 2)} x numpy's own XᵀX",
            f"{en(percent(pca['step_share_of_featurize']), 1)} % of featurize's time",
            f"costs {en(thumbnail['processing_usd_per_million'], 2)} USD per million",
            f"{en(thumbnail_month, 2)} USD",
            f"committed PCA in {phone_wall:.0f} minutes",
            f"{en(phone['processing_usd_per_million'], 2)} USD per million of processing",
            f"{en(phone['monthly_usd_pipeline'], 2)} USD for everything",
            f"{en(phone['app_uploads_usd'], 2)} USD apart",
        ],
        "docs/costs.md": [
            *(f"**{en(month[n]['monthly_usd'], 2)}**" for n in (10_000, 100_000, 1_000_000)),
            *(f"| {en(month[n]['monthly_eur'], 2)}" for n in (10_000, 100_000, 1_000_000)),
            f"{en(processing, 2)} USD of processing",
            f"**{wall:.0f} minutes**",
            f"{en(per_vcpu, 2)} images/s per vCPU",
            f"statistics {en(pca['stats_rows_per_second_per_vcpu'], 1)}",
            f"projection {en(pca['project_rows_per_second_per_vcpu'], 1)}",
        ],
        "docs/pipeline.md": [
            f"k = {quality['k']}",
            f"{en(percent(quality['one_nn_pca']), 2)} %",
            f"{en(e2e, 1)} images/s",
            f"{en(per_vcpu, 1)} per vCPU",
            f"({en(best, 1)})",
            f"{en(s['featurize_ratio'], 2)} of the best single process",
        ],
        "docs/choices.md": [
            f"k = {quality['k']}",
            f"{en(percent(quality['one_nn_pca']), 2)} %",
            f"**{en(best, 1)}**",
            f"**{en(e2e, 1)} images/s, {en(per_vcpu, 1)} per vCPU",
            f"**{en(vs_textbook, 2)} ×",
            f"**{en(s['featurize_ratio'], 2)} on bundles",
            f"reached {en(textbook, 1)} images/s",
        ],
        "docs/first-night-on-aws.md": [f"about {en(processing, 2)} USD of\nprocessing"],
        "benchmarks/README.md": [
            f"**{en(best, 1)}**",
            f"**{en(e2e, 1)}**",
            f"{en(s['featurize_ratio'], 2)}",
            f"{en(vs_textbook, 2)}",
            f"**(2)/(1) = {en(pca['stats_vs_numpy_ceiling'], 2)}: target 0.5 met**",
            f"**(3)/featurize = {en(pca['step_share_of_featurize'], 3)}: target < 10 % met.**",
        ],
        "docs/presentation/fruits_pipeline.md": [
            f"| {fr(best, 1)} |",
            f"**{fr(e2e, 1)}**",
            f"| {fr(textbook, 1)} |",
            f"**{fr(s['featurize_ratio'], 2)} ×**",
            f"**{fr(vs_textbook, 2)} ×**",
            f"**{fr(per_vcpu, 2)} images/s par vCPU**",
            *(f"**{fr(month[n]['monthly_usd'], 2)} USD**" for n in (10_000, 100_000, 1_000_000)),
            f"**{fr(processing, 2)} USD**",
            f"**{wall:.0f} minutes**",
            f"**k = {quality['k']}**",
            f"**{fr(percent(quality['one_nn_pca']), 2)} %** d'étiquettes justes",
            f"**{fr(percent(quality['one_nn_raw']), 2)} %** sur les 1 280 valeurs brutes",
            f"**{fr(pca['stats_vs_numpy_ceiling'], 2)} ×** le X'X de numpy",
            f"une paire sur trois est sous la cible ({fr(min(pca['stats_vs_numpy_ceiling_each']), 2)})",
            f"hors préparation du modèle ({inference['featurize_end_to_end']['model_prepare_seconds']:.0f} s)",
            f"**{fr(percent(pca['step_share_of_featurize']), 1)} %** du temps de featurize",
            f"environ {fr(phone_raw_day, 2)} USD par mois",
            f"| {fr(thumbnail_wall, 1)} min | **{fr(phone_wall, 1)} min** |",
            f"| {fr(thumbnail['processing_usd_per_million'], 2)} USD "
            f"| **{fr(phone['processing_usd_per_million'], 2)} USD** |",
            f"| {fr(thumbnail_month, 2)} USD | **{fr(phone['monthly_usd_pipeline'], 2)} USD** |",
            f"{fr(phone['app_uploads_usd'], 2)} USD, à part",
            f"Vignettes : {fr(thumbnail['processing_usd_per_million'], 2)} USD par million",
            f"({fr(phone['processing_usd_per_million'], 2)} USD par million pour 1,00)",
        ],
    }


def test_quoted_figures_match_their_sources(sources):
    missing = []
    for page, expected in claims(sources).items():
        text = (REPO / page).read_text()
        missing += [f"{page}: {figure!r}" for figure in expected if figure not in text]
    assert not missing, "figures missing or stale (re-run the benchmark/cost model and update):\n" + "\n".join(missing)


def test_the_phone_night_verdicts_quoted_are_the_cost_models(sources):
    """README and deck say which phone-night target is met: each verdict is the cost model's own."""
    verdicts = {}
    for target in sources["phone"]["targets"]:
        kind = next(k for k in ("minutes", "processing", "month") if k in target["target"])
        verdicts[kind] = target["verdict"] == "met"
    assert set(verdicts) == {"minutes", "processing", "month"}, sources["phone"]["targets"]
    readme, deck = (REPO / "README.md").read_text(), DECK.read_text()
    quoted = {
        "minutes": ("(target\n  2 hours: {})", "| 2 h : {} |"),
        "processing": ("(target 1.00 USD: {})", "| 1,00 USD : {} |"),
        "month": ("(target 250 USD: {})", "| 250 USD : {} |"),
    }
    wrong = []
    for kind, (in_readme, in_deck) in quoted.items():
        met = verdicts[kind]
        if in_readme.format("met" if met else "not met") not in readme:
            wrong.append(f"README.md: {kind} should say {'met' if met else 'not met'}")
        if in_deck.format("atteinte" if met else "**non atteinte**") not in deck:
            wrong.append(f"deck: {kind} should say {'atteinte' if met else 'non atteinte'}")
    assert not wrong, "\n".join(wrong)


def test_the_featurize_targets_quoted_as_met_are_met(sources):
    """The pages say both benchmark targets are met: the measurement must say so too."""
    targets = sources["inference"]["targets"]
    assert sources["featurize_ratio"] >= targets["featurize_vs_best_single_process"]
    assert sources["inference"]["ratios"]["featurize_vs_textbook"] >= targets["featurize_vs_textbook"]


def test_the_pca_targets_quoted_as_met_are_met(sources):
    """README, benchmarks/README.md and the deck say the PCA step's two targets are met: so must the measurement."""
    pca = sources["pca"]
    assert not pca["quick"] and pca["repeats"] >= 3
    assert pca["stats_vs_numpy_ceiling"] >= 0.5 and pca["step_share_of_featurize"] < 0.10
    assert all(pca["targets_met"].values())


def test_quality_is_measured_on_a_basis_that_never_saw_the_test_photos(sources):
    quality = sources["quality"]
    assert quality["basis_fitted_on"].startswith("Training only")
    assert quality["test"] > 0 and quality["training"] > 0
    assert quality["one_nn_pca"] >= 0.95


def test_generated_blocks_are_the_commands_current_output():
    stale = []
    for page in PAGES:
        for arguments, block in figures.generated_blocks(page.read_text()):
            if block != figures.as_markdown(figures.module_output([*figures.cost_command(), *arguments.split()])):
                stale.append(f"{page.relative_to(REPO)}: `costs {arguments}`")
    assert not stale, "generated blocks out of date (make figures):\n" + "\n".join(stale)
    assert figures.generated_blocks((REPO / "docs" / "costs.md").read_text()), "costs.md lost its generated tables"


def test_the_deck_chart_plots_the_cost_models_month(sources):
    plotted = json.loads((DECK.parent / "img" / "monthly_bill.json").read_text())
    assert plotted == figures.bill_summary(sources["bill"]), "img/monthly_bill.png is stale: make figures"


def test_no_stale_figure_comes_back():
    found = [f"{page.relative_to(REPO)}: {stale!r}" for page in PAGES for stale in STALE if stale in page.read_text()]
    assert not found, "stale figures:\n" + "\n".join(found)


def test_the_price_refresh_endpoint_is_named_alike_everywhere():
    source = "\n".join(p.read_text() for p in (REPO / "plugins" / "fruits").rglob("*.py"))
    region = re.search(r'PRICING_ENDPOINT_REGION\s*=\s*"([a-z0-9-]+)"', source).group(1)
    for page in ("docs/costs.md", "docs/gdpr.md"):
        text = (REPO / page).read_text()
        mentions = re.findall(r"[Pp]rice List API[^.]*?\b((?:us|eu|ap)-[a-z]+-\d)\b", text)
        assert mentions, f"{page} does not name the Price List API endpoint's region"
        assert set(mentions) == {region}, f"{page} names {sorted(set(mentions))}, the code uses {region}"


def test_relative_links_of_the_pages_resolve():
    """A reader following a link lands on a file, not a 404 (the executed notebook and the first-night guide too)."""
    broken = []
    for page in [*PAGES, REPO / "docs" / "presentation" / "README.md", REPO / "infra" / "README.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#", 1)[0]
            if not path or "://" in path or path.startswith("mailto:"):
                continue
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
