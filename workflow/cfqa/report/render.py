"""Rendering a ReportDocument: Markdown (tables by tabulate, images by file name) and one
self-contained HTML page (inline CSS, PNGs embedded as base64; nothing loaded from a
network, so the report opens offline and survives being mailed around)."""
from __future__ import annotations

import base64
import html
import re

import jinja2
from markupsafe import Markup
from tabulate import tabulate

from cfqa.report.document import ReportDocument
from cfqa.report.formatting import MISSING
from cfqa.report.tables import Table

_CODE_SPAN = re.compile(r"`([^`]+)`")


def _markdown_cell(cell: str) -> str:
    # A literal "|" would end the cell, a newline the row; "<" could open raw HTML.
    return cell.replace("|", r"\|").replace("\n", " ").replace("<", "&lt;")


_NUMERIC_CELL = re.compile(r"^[-+]?[\d,]*\.?\d+( ?[A-Za-z]+)?$")


def _numeric_column(table: Table, index: int) -> bool:
    """True when every present cell reads as a number (with an optional unit)."""
    cells = [row[index] for row in table.rows if row[index] != MISSING]
    return bool(cells) and all(_NUMERIC_CELL.match(cell) for cell in cells)


def markdown_table(table: Table) -> str:
    align = tuple("right" if _numeric_column(table, i) else "left" for i in range(len(table.headers)))
    return tabulate([[_markdown_cell(c) for c in row] for row in table.rows],
                    headers=[_markdown_cell(h) for h in table.headers],
                    tablefmt="pipe", disable_numparse=True, colalign=align)


def render_markdown(document: ReportDocument) -> str:
    parts = [f"# {document.title}"]
    for section in document.sections:
        parts.append(f"## {section.title}")
        parts += list(section.paragraphs)
        if section.bullets:
            parts.append("\n".join(f"- {item}" for item in section.bullets))
        for table in section.tables:
            parts.append(f"### {table.title}")
            parts.append(markdown_table(table) if table.rows else "_No rows._")
            if table.caption:
                parts.append(f"_{table.caption}_")
        for figure in section.figures:
            parts += [f"### {figure.title}", f"![{figure.title}]({figure.name}.png)", f"_{figure.caption}_"]
    return "\n\n".join(parts) + "\n"


def inline_markup(text: str) -> Markup:
    """Escaped text where `code spans` become <code> elements."""
    escaped = html.escape(str(text), quote=True)
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", escaped))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# Tables with more columns than this get a smaller font; wider still, they scroll sideways
# inside their own box (the page does not) with the first column kept in view.
WIDE_COLUMNS = 8

_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ document.title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
nav ul { columns: 2; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: .5em 0; }
/* Separate borders: collapsed ones do not move with a sticky cell. Cells get opaque backgrounds
   so that the sticky column hides what scrolls beneath it. */
table { border-collapse: separate; border-spacing: 0; font-size: .9em; border-top: 1px solid #ddd; border-left: 1px solid #ddd; }
table.wide { font-size: .78em; }
th, td { border-right: 1px solid #ddd; border-bottom: 1px solid #ddd; padding: .25em .6em; text-align: right; white-space: nowrap; background: #fff; }
th { background: #f3f3f3; } th.text, td.text { text-align: left; }
tbody tr:nth-child(even) td { background: #fafafa; }
/* The first column names the row: it stays in view while a wide table scrolls sideways. */
th:first-child, td:first-child { position: sticky; left: 0; z-index: 1; box-shadow: 1px 0 0 #bbb; }
.caption { color: #555; font-size: .88em; max-width: 60em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; }
figure h3.figure-title { margin: 0 0 .4em; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
</style>
</head>
<body>
<h1>{{ document.title }}</h1>
{% for section in document.sections %}
{% if loop.index0 == [1, loop.length - 1] | min %}{# the answer (the first section) comes before the table of contents #}
<nav><ul>
{% for entry in document.sections %}<li><a href="#{{ entry.title | slug }}">{{ entry.title }}</a></li>
{% endfor %}</ul></nav>
{% endif %}
<section id="{{ section.title | slug }}">
<h2>{{ section.title }}</h2>
{% for paragraph in section.paragraphs %}<p>{{ paragraph | inline }}</p>
{% endfor %}
{% if section.bullets %}<ul>
{% for item in section.bullets %}<li>{{ item | inline }}</li>
{% endfor %}</ul>{% endif %}
{% for table in section.tables %}
<h3 id="{{ table.key }}">{{ table.title | inline }}</h3>
{% if table.rows %}{% set numeric = table | numeric_columns %}<div class="table-wrap"><table{% if table.headers | length > wide_columns %} class="wide"{% endif %}>
<thead><tr>{% for header in table.headers %}<th{% if not numeric[loop.index0] %} class="text"{% endif %}>{{ header | inline }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}<tr>{% for cell in row %}<td{% if not numeric[loop.index0] %} class="text"{% endif %}>{{ cell | inline }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>{% else %}<p><em>No rows.</em></p>{% endif %}
{% if table.caption %}<p class="caption">{{ table.caption | inline }}</p>{% endif %}
{% endfor %}
{% for figure in section.figures %}
<figure id="figure-{{ figure.name }}">
<h3 class="figure-title">{{ figure.title | inline }}</h3>
<img alt="{{ figure.title }}" src="data:image/png;base64,{{ images[figure.name] }}">
<figcaption class="caption">{{ figure.caption | inline }}</figcaption>
</figure>
{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=False, lstrip_blocks=False)
    environment.filters["inline"] = inline_markup
    environment.filters["slug"] = _slug
    environment.filters["numeric_columns"] = lambda table: [
        _numeric_column(table, i) for i in range(len(table.headers))]
    return environment


def render_html(document: ReportDocument, images: dict[str, bytes]) -> str:
    """The whole report as one HTML page; `images` maps each figure name to its PNG bytes."""
    missing = sorted({f.name for s in document.sections for f in s.figures} - set(images))
    if missing:
        raise ValueError(f"no PNG for figures {missing}")
    encoded = {name: base64.b64encode(data).decode("ascii") for name, data in images.items()}
    return _environment().from_string(_HTML_TEMPLATE).render(document=document, images=encoded,
                                                             wide_columns=WIDE_COLUMNS)
