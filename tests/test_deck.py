"""The deck (docs/presentation/fruits_pipeline.md) renders with the Marp CLI, and no slide's content overflows.

Rendered as a reader sees it: the pinned Marp CLI (node_modules/, `make npm`) writes the HTML, Debian's Chromium
(headless, through selenium and chromedriver) lays it out. A slide overflows when any element inside it ends
outside the slide's content box (the frame less its padding, where the header and footer sit), or when the slide
scrolls. The French house style is checked too ("n° 1", none of the calques issue 16 listed). Every picture
docs/presentation/figures.py draws is legible on a 1280 x 720 slide: its smallest text (img/figures.json, in the
picture's own pixels) scaled as the slide shows the picture is at least MIN_TEXT_PX high.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import headless_chromium

REPO = Path(__file__).resolve().parents[1]
DECK = REPO / "docs" / "presentation" / "fruits_pipeline.md"
MARP = REPO / "node_modules" / ".bin" / "marp"
CHROMIUM = os.environ.get("CHROME_PATH", "/usr/bin/chromium")
TOLERANCE_PX = 1
FIGURES = DECK.parent / "img" / "figures.json"  # written by figures.py: size and smallest text of each picture
MIN_TEXT_PX = 14  # the smallest text a projector carries to the back of a room, on a 1280 x 720 slide

# Each picture as the slide shows it: an <img> (its box) or a `bg ... fit` background (contained in its box),
# in the slide's own (unscaled) pixels.
PICTURES_JS = """
const shown = [];
document.querySelectorAll('section').forEach((section) => {
  const scale = section.getBoundingClientRect().width / section.offsetWidth;
  const title = section.querySelector('h1, h2');
  const where = {slide: title ? title.textContent : '', scale};
  section.querySelectorAll('img').forEach((img) => {
    const r = img.getBoundingClientRect();
    shown.push({...where, src: img.getAttribute('src'), width: r.width / scale, height: r.height / scale,
                fit: 'box'});
  });
  section.querySelectorAll('figure').forEach((figure) => {
    const url = /url\\(["']?([^"')]+)["']?\\)/.exec(getComputedStyle(figure).backgroundImage || '');
    if (!url) return;
    const r = figure.getBoundingClientRect();
    shown.push({...where, src: url[1], width: r.width / scale, height: r.height / scale,
                fit: getComputedStyle(figure).backgroundSize});
  });
});
return shown;
"""

# Every element's box against its slide's content box, in the slide's own (unscaled) pixels.
OVERFLOW_JS = (
    f"const TOL = {TOLERANCE_PX};"
    + """
const report = [];
// A slide with a split background is three sections (background, content, pseudo): keep the content one.
const slides = document.querySelectorAll(
  'section:not([data-marpit-advanced-background]), section[data-marpit-advanced-background="content"]');
slides.forEach((section, index) => {
  const style = getComputedStyle(section);
  const box = section.getBoundingClientRect();
  const scale = box.width / section.offsetWidth;
  const inner = {
    top: box.top + parseFloat(style.paddingTop) * scale,
    bottom: box.bottom - parseFloat(style.paddingBottom) * scale,
    left: box.left + parseFloat(style.paddingLeft) * scale,
    right: box.right - parseFloat(style.paddingRight) * scale,
  };
  const out = [];
  section.querySelectorAll('*').forEach((el) => {
    if (el.closest('header, footer') || getComputedStyle(el).position === 'absolute') return;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return;
    const over = Math.max(r.bottom - inner.bottom, inner.top - r.top, r.right - inner.right, inner.left - r.left);
    if (over / scale > TOL) {
      const text = (el.textContent || '').trim().slice(0, 60);
      out.push(el.tagName + ' "' + text + '" by ' + Math.round(over / scale) + ' px');
    }
  });
  if (section.scrollHeight > section.clientHeight + TOL) {
    out.push('the slide scrolls: ' + section.scrollHeight + ' > ' + section.clientHeight);
  }
  const title = section.querySelector('h1, h2');
  report.push({slide: index + 1, title: title ? title.textContent : '', overflow: out});
});
return report;
"""
)

CALQUES = ("démontage garanti", "découpages par cœur", "capteur", "roues Python", "mémoire Python hors tas")


def slides_markdown() -> list[str]:
    body = DECK.read_text().split("\n---\n", 1)[1]  # after the front matter
    return [s for s in re.split(r"\n---\n", body) if s.strip()]


def test_deck_french_style():
    text = DECK.read_text()
    assert not re.search(r"n°\d", text), 'write "n° 1", with a space'
    found = [c for c in CALQUES if c.lower() in text.lower()]
    assert not found, f"calques in the deck: {found}"


def test_figures_records_every_picture_it_draws():
    figures = json.loads(FIGURES.read_text())
    drawn = {f"{p.stem}.png" for p in (DECK.parent / "diagrams").glob("*.mmd")} | {"monthly_bill.png"}
    assert set(figures) == drawn, "img/figures.json is stale: make figures"
    for name, figure in figures.items():
        assert (DECK.parent / "img" / name).exists()
        assert figure["smallest_text_px"] > 0 and figure["width_px"] > 0 and figure["height_px"] > 0


def test_deck_images_exist():
    missing = [m for m in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", DECK.read_text()) if not (DECK.parent / m).exists()]
    assert not missing, f"the deck links images that do not exist: {missing} (make figures)"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    if not MARP.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("node_modules/.bin/marp is missing: `make npm` installs the pinned Marp CLI")
        pytest.skip("the Marp CLI is not installed (make npm)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package chromium)")
    html = tmp_path_factory.mktemp("deck") / "deck.html"
    result = subprocess.run(
        [str(MARP), "--no-stdin", "--html", "--allow-local-files", str(DECK), "-o", str(html)],
        cwd=REPO,
        env={**os.environ, "CHROME_PATH": CHROMIUM},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    # The images are relative to the deck: render next to them.
    target = DECK.parent / f".rendered-{os.getpid()}.html"
    shutil.copyfile(html, target)
    yield target
    target.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def layout(rendered) -> dict:
    """The rendered deck laid out once by Chromium at 1280 x 720: the overflow report and the pictures shown."""
    with headless_chromium("1280,720", extra_flags=("--allow-file-access-from-files",)) as driver:
        driver.get(rendered.as_uri())
        driver.execute_script("return document.fonts.ready")
        driver.execute_script(
            "return Promise.all([...document.images]"
            ".map(i => i.complete ? 0 : new Promise(r => i.onload = i.onerror = r)))"
        )
        return {"overflow": driver.execute_script(OVERFLOW_JS), "pictures": driver.execute_script(PICTURES_JS)}


@pytest.fixture(scope="module")
def overflow_report(layout) -> list[dict]:
    return layout["overflow"]


def smallest_text_on_slide(picture: dict, figure: dict) -> float:
    """The on-slide height (px) of a picture's smallest text: its own pixels times the scale the slide shows it at."""
    across, down = picture["width"] / figure["width_px"], picture["height"] / figure["height_px"]
    if picture["fit"] == "box":  # an <img> keeps its ratio (Marp's w: or h: sets one side)
        return figure["smallest_text_px"] * across
    # `bg fit` is CSS `contain` (the whole picture in the box, the smaller scale); anything else covers the box.
    return figure["smallest_text_px"] * (min(across, down) if picture["fit"] == "contain" else max(across, down))


@pytest.mark.slow  # Marp renders, Chromium measures
def test_every_slide_is_rendered(overflow_report):
    assert len(overflow_report) == len(slides_markdown())


@pytest.mark.slow  # Marp renders, Chromium measures
def test_no_slide_overflows(overflow_report):
    bad = [
        f"slide {s['slide']} ({s['title']}): " + "; ".join(s["overflow"][:3]) for s in overflow_report if s["overflow"]
    ]
    assert not bad, "content overflows its slide:\n" + "\n".join(bad)


@pytest.mark.slow  # Marp renders, Chromium measures
def test_every_drawn_figure_is_legible_at_1280x720(layout):
    figures = json.loads(FIGURES.read_text())
    shown = {name: [p for p in layout["pictures"] if Path(p["src"]).name == name] for name in figures}
    assert all(shown.values()), f"figures the deck does not show: {[n for n, s in shown.items() if not s]}"
    small = [
        f"{name} on '{p['slide']}': smallest text {smallest_text_on_slide(p, figures[name]):.1f} px"
        for name, pictures in shown.items()
        for p in pictures
        if smallest_text_on_slide(p, figures[name]) < MIN_TEXT_PX
    ]
    assert not small, f"text under {MIN_TEXT_PX} px on a 1280 x 720 slide:\n" + "\n".join(small)
