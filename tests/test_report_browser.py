"""The report stage's index.html, built from real stage results, as headless Chromium renders
it: the headline figure is the page's first figure, above the first table and whole in the
first screen, and every figure has a heading and a caption; every figure loads and decodes in
full (naturalWidth > 0, every pixel drawn), every table
shows exactly the rows of the report's document model with one row per method in each group
(variant, seed, answer type, lr), and wide tables scroll inside their own box with the method
column kept in view while the page itself does not scroll sideways. A screenshot of the top of
the page (report-top.png in the module's temporary folder, its path printed) shows what a reader
sees first.

`chromium --headless --dump-dom` prints the DOM after the load event; a copy of the page gets
one script that measures it on load and writes its findings into the DOM as JSON (the
report itself has no script). No DevTools client library needed.

Needs Debian's chromium (`make browser`). Skipped where it is missing, except in CI, where a
missing browser fails (tests/required_tools.py); CFQA_CHROMIUM names another binary."""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
from collections import Counter, defaultdict

import msgspec
import pytest

from cfqa import config as config_module
from cfqa.contract import read_data_stats
from cfqa.report.aggregate import aggregate
from cfqa.report.document import build_document
from cfqa.report.inputs import load_results
from cfqa.report.render import WIDE_COLUMNS
from cfqa.stages import report as report_stage
from required_tools import require_executable

pytestmark = pytest.mark.slow   # the stages run once per session (stage_results fixture)

CHROMIUM = require_executable("chromium", "`make browser` installs it", module=True, env_override="CFQA_CHROMIUM")

# Narrower than the page's 1200px column: the widest tables must scroll inside their box.
WINDOW = (1024, 768)
# Tables (by key prefix) with one row per method in each group: the method and the group's
# columns name one row. Comparisons with full fine-tuning have a row for every other method.
GROUP_COLUMNS = {"methods": (), "accuracy-": ("variant",), "comparison-": ("variant",), "memorization": (),
                 "by-type-": ("answer type",), "type-comparison-": ("answer type",), "efficiency": (),
                 "memory": (), "training": ("seed",), "lr-selection": ("lr",), "primary-endpoint": ()}
COMPARISONS = ("comparison-", "type-comparison-", "primary-endpoint")

MEASURE = """<script>
// A PNG cut short still reports its header's size: count the pixels it really decoded to.
function opaquePixels(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let alpha = 3; alpha < data.length; alpha += 4) count += data[alpha] === 255;
  return count;
}
window.addEventListener("load", () => {
  const box = element => element.getBoundingClientRect();
  const edges = element => { const b = box(element); return {top: b.top, bottom: b.bottom, left: b.left, right: b.right}; };
  const figures = [...document.querySelectorAll("figure")];
  const firstTable = document.querySelector("table");
  const found = {
    page: {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
           innerHeight: window.innerHeight},
    lead: {
      figures: figures.map(figure => figure.id),
      firstFigure: edges(figures[0]), firstImage: edges(figures[0].querySelector("img")),
      firstTable: edges(firstTable),
      // Node.DOCUMENT_POSITION_FOLLOWING: the table comes after the figure in the page's order.
      tableFollowsFigure: Boolean(figures[0].compareDocumentPosition(firstTable) & Node.DOCUMENT_POSITION_FOLLOWING),
      headings: figures.map(figure => ({
        heading: (figure.querySelector("h3.figure-title") || {}).textContent || "",
        caption: (figure.querySelector("figcaption") || {}).textContent || ""}))},
    images: [...document.images].map(image => ({
      figure: image.closest("figure").id, complete: image.complete,
      naturalWidth: image.naturalWidth, naturalHeight: image.naturalHeight, shownWidth: box(image).width,
      opaquePixels: image.naturalWidth ? opaquePixels(image) : 0})),
    tables: [...document.querySelectorAll("table")].map(table => {
      const wrap = table.closest(".table-wrap");
      const first = table.tBodies[0].rows[0].cells[0];
      const before = box(first).left - box(wrap).left;
      wrap.scrollLeft = wrap.scrollWidth;
      const scrolled = wrap.scrollLeft;
      const after = box(first).left - box(wrap).left;
      wrap.scrollLeft = 0;
      return {
        key: wrap.previousElementSibling.id,
        headers: [...table.tHead.rows[0].cells].map(cell => cell.textContent),
        rows: [...table.tBodies[0].rows].map(row => [...row.cells].map(cell => cell.textContent)),
        wide: table.classList.contains("wide"), fontSize: parseFloat(getComputedStyle(table).fontSize),
        scrolled: scrolled, firstColumnMoved: after - before,
        fitsPage: box(wrap).right <= document.documentElement.clientWidth};
    })};
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(found);
  document.body.append(out);
});
</script>
"""


def _chromium_args(tmp_path) -> list[str]:
    args = [CHROMIUM or "chromium", "--headless", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")          # Chromium refuses to run as root with its sandbox
    return args


@pytest.fixture(scope="module")
def report(tmp_path_factory, stage_results) -> dict:
    """The report stage on stage_results, and the document model its page was rendered from."""
    root = tmp_path_factory.mktemp("browser-report")
    cfg = config_module.load([stage_results.params])
    out = root / "reports"
    report_stage.run(cfg, results=stage_results.results, data_stats=stage_results.data_stats, out=out,
                     summary=root / "summary.json")
    results = load_results(stage_results.results, list(cfg.methods), cfg.seeds)
    stats = msgspec.to_builtins(read_data_stats(stage_results.data_stats))
    stats.pop("schema_version")
    document = build_document(results, aggregate(results), stats, overview={})
    tables = [table for section in document.sections for table in section.tables]
    figures = [figure.name for section in document.sections for figure in section.figures]
    return {"root": root, "page": out / "index.html", "tables": tables, "figures": figures,
            "methods": list(cfg.methods), "seeds": list(cfg.seeds)}


@pytest.fixture(scope="module")
def rendered(report, tmp_path_factory) -> dict:
    """What Chromium measured on the report page."""
    root = tmp_path_factory.mktemp("browser")
    page = report["page"].read_text()
    assert page.count("</body>") == 1
    probe = root / "index.html"
    probe.write_text(page.replace("</body>", MEASURE + "</body>"))
    done = subprocess.run([*_chromium_args(root), "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, flags=re.DOTALL)
    assert found, f"the measuring script wrote nothing; chromium said: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_every_figure_loads_and_decodes(rendered, report):
    images = rendered["images"]
    assert [image["figure"] for image in images] == [f"figure-{name}" for name in report["figures"]]
    assert len(images) == 5
    for image in images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
        # The figures are saved on an opaque white background: every pixel decoded is opaque.
        assert image["opaquePixels"] == image["naturalWidth"] * image["naturalHeight"], image
        assert 0 < image["shownWidth"] <= WINDOW[0], image


def _shown(cells: tuple[str, ...]) -> tuple[str, ...]:
    """Cells as the page shows them: `code` spans are <code> elements, without backticks."""
    return tuple(re.sub(r"`([^`]+)`", r"\1", cell) for cell in cells)


def test_tables_show_the_documents_rows(rendered, report):
    """Cell for cell what the document model holds: nothing lost or merged by the HTML."""
    shown = [(t["key"], tuple(t["headers"]), [tuple(row) for row in t["rows"]]) for t in rendered["tables"]]
    expected = [(t.key, _shown(t.headers), [_shown(row) for row in t.rows]) for t in report["tables"] if t.rows]
    assert shown == expected


def _groups(table: dict, columns: tuple[str, ...]) -> dict[tuple[str, ...], Counter]:
    """Rows by the values of their group columns: how often each method appears in each."""
    headers = table["headers"]
    method = headers.index("method")
    keys = [headers.index(name) for name in columns]
    groups: dict[tuple[str, ...], Counter] = defaultdict(Counter)
    for row in table["rows"]:
        groups[tuple(row[i] for i in keys)][row[method]] += 1
    return groups


def test_each_table_has_one_row_per_method_in_each_group(rendered, report):
    methods = report["methods"]
    grouped = {t["key"]: _groups(t, columns) for t in rendered["tables"]
               for prefix, columns in GROUP_COLUMNS.items() if t["key"].startswith(prefix)}
    assert {"accuracy-test", "accuracy-seen", "comparison-test", "comparison-seen", "memorization", "by-type-test",
            "type-comparison-test", "efficiency", "memory", "training", "lr-selection",
            "primary-endpoint", "methods"} <= set(grouped)
    for key, groups in grouped.items():
        expected = [m for m in methods if m != "full"] if key.startswith(COMPARISONS) else methods
        assert groups, key
        for group, counts in groups.items():
            assert counts == Counter(expected), (key, group, counts)
    assert sorted(grouped["training"]) == [(str(seed),) for seed in report["seeds"]]
    assert sorted(grouped["accuracy-test"]) == [("counterfactual",), ("empty",), ("factual",), ("random",)]


def test_wide_tables_scroll_in_their_box_with_the_first_column_in_view(rendered):
    page = rendered["page"]
    assert page["scrollWidth"] <= page["innerWidth"], "the page scrolls sideways"
    tables = rendered["tables"]
    assert all(t["fitsPage"] for t in tables)
    assert all(t["wide"] == (len(t["headers"]) > WIDE_COLUMNS) for t in tables)
    narrow = {t["fontSize"] for t in tables if not t["wide"]}
    assert len(narrow) == 1 and all(t["fontSize"] < min(narrow) for t in tables if t["wide"])
    scrolling = [t for t in tables if t["scrolled"] > 0]
    assert {"accuracy-test", "comparison-test"} <= {t["key"] for t in scrolling}
    for table in scrolling:
        # Sticky: the first column moves at most by the table's 1px border, not with the scroll.
        assert abs(table["firstColumnMoved"]) <= 1.5, table["key"]


def test_the_headline_figure_comes_first_above_every_table_in_the_first_screen(rendered, report):
    lead, page = rendered["lead"], rendered["page"]
    assert lead["figures"][0] == "figure-headline" and report["figures"][0] == "headline"
    assert lead["tableFollowsFigure"]
    assert lead["firstFigure"]["bottom"] <= lead["firstTable"]["top"]
    # Whole in the first screen: the reader sees the answer before scrolling.
    image = lead["firstImage"]
    assert 0 <= image["top"] and image["bottom"] <= page["innerHeight"] and image["right"] <= page["innerWidth"]
    assert image["bottom"] - image["top"] > 0.3 * page["innerHeight"]      # drawn at a readable size
    for figure in lead["headings"]:
        assert figure["heading"].strip() and len(figure["caption"]) > 40, figure


def test_screenshot_of_the_top_shows_the_headline(report, rendered):
    """The top of the page as pixels (report-top.png, kept for a person to look at): the size
    of the window, and the headline figure's area is drawn, not blank."""
    from matplotlib import image as mpimg

    shot = report["root"] / "report-top.png"
    done = subprocess.run([*_chromium_args(report["root"]), f"--screenshot={shot}", report["page"].as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    print(f"screenshot of the top of the report: {shot}")
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert pixels[..., :3].std() > 0.05
    image = rendered["lead"]["firstImage"]
    area = pixels[int(image["top"]):int(image["bottom"]), int(image["left"]):int(image["right"]), :3]
    assert area.size and area.std() > 0.05 and (area < 0.5).mean() > 0.01     # lines and text, not a blank box
