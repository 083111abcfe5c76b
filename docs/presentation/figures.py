"""The deck's pictures, made from the project's own outputs (`make figures`):

- img/monthly_bill.png: the steady-state month at 10 k / 100 k / 1 M photos a night, from
  `python -m fruits.cli.costs bill --json`; img/monthly_bill.json holds the plotted values, so that
  tests/test_docs_figures.py can tell when the cost model has moved away from the chart;
- img/architecture_data.png, img/aws_services.png: the deck's diagrams, in French, from the Mermaid sources in
  diagrams/ (where the data goes, as docs/architecture.md's second diagram; the AWS services of infra/), through
  mermaid-cli (node_modules/, `make npm`) and Debian's Chromium;
- img/figures.json: each drawn picture's pixel size and the height of its smallest text in its own pixels, from
  which tests/test_deck.py computes that text's height on a 1280 x 720 slide;
- img/airflow-ui-run-success.png: copied from test-artifacts/ when the services test has captured one;
- the generated blocks of docs/*.md: the text between `<!-- generated: costs <args> -->` and
  `<!-- end generated -->` is the output of the cost command (`python -m fruits.cli.costs <args>`, or
  `fruits.cli.costs` where the command lives there), rewritten here and compared by tests/test_docs_figures.py.

    PYTHONPATH=plugins .venv/bin/python docs/presentation/figures.py [--only bill|diagrams|docs]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMG = Path(__file__).resolve().parent / "img"
DIAGRAMS = Path(__file__).resolve().parent / "diagrams"  # <name>.mmd -> img/<name>.png
FIGURES = IMG / "figures.json"
# Large type, no shrinking to a page width: the slide scales the picture, and the test checks the result.
DIAGRAM_FONT_PX = 22
DIAGRAM_SCALE = 2
MERMAID_CONFIG = {
    "theme": "default",
    "themeVariables": {"fontSize": f"{DIAGRAM_FONT_PX}px"},
    "flowchart": {"useMaxWidth": False, "wrappingWidth": 400, "nodeSpacing": 25, "rankSpacing": 35},
}
SCREENSHOT = REPO / "test-artifacts" / "airflow-ui-run-success.png"
CHROMIUM = os.environ.get("CHROME_PATH", "/usr/bin/chromium")
BILL_GROUPS = (
    ("traitement (EMR, S3)", ("processing",)),
    ("stockage (365 jours)", ("storage",)),
    ("fixe (Airflow, KMS)", ("fixed",)),
)


GENERATED = re.compile(r"(<!-- generated: costs ([^>]+?) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)


def cost_command() -> list[str]:
    """The cost model's command line, as the docs show it: `python -m fruits.cli.costs`."""
    return ["fruits.cli.costs"]


def module_output(args: list[str]) -> str:
    """`python -m <args>` with the plugins on the path, as the docs show it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    return subprocess.run(
        [sys.executable, "-m", *args], env=env, cwd=REPO, check=True, capture_output=True, text=True, timeout=300
    ).stdout


def cost_bill() -> dict:
    """The cost model's year bill, as `make cost` computes it."""
    return json.loads(module_output([*cost_command(), "bill", "--json"]))


def generated_blocks(text: str) -> list[tuple[str, str]]:
    """(cost command arguments, text) of each generated block of a Markdown page."""
    return [(match.group(2), match.group(3)) for match in GENERATED.finditer(text)]


def as_markdown(output: str) -> str:
    """A command's output as Markdown: the plain lines before its first table or heading go in a text fence."""
    lines = output.rstrip("\n").split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith(("|", "#"))), len(lines))
    preamble = "\n".join(lines[:first]).strip("\n")
    rest = "\n".join(lines[first:])
    return (f"```text\n{preamble}\n```\n\n" if preamble else "") + rest + "\n"


def refresh_generated(page: Path) -> bool:
    """Rewrite each generated block of `page` with its command's current output; True when it changed."""
    text = page.read_text()
    new = GENERATED.sub(
        lambda m: m.group(1) + as_markdown(module_output([*cost_command(), *m.group(2).split()])) + m.group(4), text
    )
    if new != text:
        page.write_text(new)
    return new != text


def bill_summary(bill: dict) -> dict:
    """What the chart plots: per volume, the month's total and its three groups (USD)."""
    months = {}
    for volume, month in bill["months"].items():
        groups = {
            label: round(sum(v for k, v in month["components_usd"].items() if k.startswith(prefixes)), 2)
            for label, prefixes in BILL_GROUPS
        }
        months[volume] = {"monthly_usd": month["monthly_usd"], "monthly_eur": month["monthly_eur"], **groups}
    return {"region": bill["region"], "months": months}


def record_figure(name: str, width_px: int, height_px: int, smallest_text_px: float) -> None:
    """Note a picture's size and its smallest text (both in the picture's own pixels) in img/figures.json."""
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = {"width_px": width_px, "height_px": height_px, "smallest_text_px": round(smallest_text_px, 1)}
    FIGURES.write_text(json.dumps(dict(sorted(figures.items())), indent=1) + "\n")


def smallest_text_px(fig) -> float:
    """The height in pixels of the smallest visible text of a Matplotlib figure (font size in points at its dpi)."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * fig.dpi / 72


def plot_bill(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = sorted(summary["months"], key=int)
    names = [f"{int(v):,}".replace(",", "\u202f") + "\nphotos/nuit" for v in volumes]
    plt.rcParams.update({"font.size": 16})
    fig, ax = plt.subplots(figsize=(8, 6.4), dpi=100)
    bottom = [0.0] * len(volumes)
    for (label, _), color in zip(BILL_GROUPS, ("#2d6a4f", "#95d5b2", "#adb5bd"), strict=True):
        values = [summary["months"][v][label] for v in volumes]
        ax.bar(names, values, bottom=bottom, label=label, color=color, width=0.55)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for x, v in enumerate(volumes):
        month = summary["months"][v]
        ax.text(
            x,
            bottom[x] + 1,
            f"{month['monthly_usd']:.2f} USD".replace(".", ","),
            ha="center",
            fontsize=18,
            fontweight="bold",
        )
    ax.set_ylabel("USD par mois")
    ax.set_ylim(0, max(bottom) * 1.35)
    ax.set_title(f"La facture d'un mois en régime établi ({summary['region']})", fontsize=18)
    ax.legend(frameon=False, fontsize=16, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    width, height = fig.canvas.get_width_height()
    record_figure(path.name, width, height, smallest_text_px(fig))
    plt.close(fig)


def render_diagrams() -> list[Path]:
    from PIL import Image

    mmdc = REPO / "node_modules" / ".bin" / "mmdc"
    if not mmdc.exists():
        raise SystemExit("mermaid-cli is missing: run `make npm` first")
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        puppeteer = Path(tmp) / "puppeteer.json"
        puppeteer.write_text(json.dumps({"executablePath": CHROMIUM, "args": ["--no-sandbox", "--disable-gpu"]}))
        config = Path(tmp) / "mermaid.json"
        config.write_text(json.dumps(MERMAID_CONFIG))
        for source in sorted(DIAGRAMS.glob("*.mmd")):
            target = IMG / f"{source.stem}.png"
            subprocess.run(
                [str(mmdc), "-p", str(puppeteer), "-c", str(config), "-i", str(source), "-o", str(target), "-q"]
                + ["-s", str(DIAGRAM_SCALE), "-b", "white"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            with Image.open(target) as image:
                record_figure(target.name, *image.size, DIAGRAM_FONT_PX * DIAGRAM_SCALE)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make the deck's pictures from the project's outputs.")
    parser.add_argument("--only", choices=("bill", "diagrams", "docs"), help="make only these pictures or blocks")
    args = parser.parse_args(argv)
    IMG.mkdir(exist_ok=True)
    if args.only in (None, "bill"):
        summary = bill_summary(cost_bill())
        (IMG / "monthly_bill.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        plot_bill(summary, IMG / "monthly_bill.png")
        print("wrote", IMG / "monthly_bill.png")
    if args.only in (None, "diagrams"):
        for path in render_diagrams():
            print("wrote", path)
    if args.only in (None, "docs"):
        for page in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
            if refresh_generated(page):
                print("rewrote the generated blocks of", page.relative_to(REPO))
    if args.only is None and SCREENSHOT.exists():
        shutil.copyfile(SCREENSHOT, IMG / SCREENSHOT.name)
        print("copied", SCREENSHOT)


if __name__ == "__main__":
    main()
