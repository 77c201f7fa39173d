"""A report as two files: ``report.md`` (tables in Markdown, figures linked) and ``report.html`` (one self-contained
page: the same tables, the figures embedded as data URIs, no server and nothing fetched).

A report is a title and a list of sections; a section holds blocks: a paragraph, a rich Table (the tables the
terminal shows, converted cell by cell), a figure (a PNG, with its PDF beside it) or preformatted text (configs).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table
from rich.text import Text

from iclgd.runs import atomic_file


@dataclass
class Figure:
    png: Path
    caption: str


@dataclass
class Preformatted:
    text: str


Block = str | Table | Figure | Preformatted


@dataclass
class Section:
    heading: str
    blocks: list[Block] = field(default_factory=list)


def _plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def table_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """A rich Table's header and rows as plain strings."""
    headers = [_plain(column.header) for column in table.columns]
    columns = [[_plain(cell) for cell in column.cells] for column in table.columns]
    return headers, [list(row) for row in zip(*columns, strict=True)]


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or " "


def _markdown_table(table: Table) -> str:
    headers, rows = table_rows(table)
    lines = [f"**{_plain(table.title)}**", ""] if table.title else []
    lines += ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    if table.caption:
        lines += ["", *(f"*{line.strip()}*  " for line in _plain(table.caption).splitlines() if line.strip())]
    return "\n".join(lines)


def to_markdown(title: str, sections: list[Section], base: Path) -> str:
    """The report as Markdown; figure links are relative to ``base`` (the folder report.md is written to)."""
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.heading}")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_markdown_table(block))
            elif isinstance(block, Figure):
                link = block.png.relative_to(base) if block.png.is_relative_to(base) else block.png
                pdf = Path(link).with_suffix(".pdf")
                parts.append(f"![{block.caption}]({link})\n\n*{block.caption}* ([PDF]({pdf}))")
            elif isinstance(block, Preformatted):
                parts.append(f"```\n{block.text.rstrip()}\n```")
            else:
                parts.append(block)
    return "\n\n".join(parts) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { caption-side: top; font-weight: 600; text-align: left; padding: 0.3rem 0; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; } figcaption { font-style: italic; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
p.note { font-size: 0.85rem; color: #555; }
"""


def _html_table(table: Table) -> str:
    headers, rows = table_rows(table)
    caption = f"<caption>{html.escape(_plain(table.title))}</caption>" if table.title else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    notes = "".join(f'<p class="note">{html.escape(line)}</p>' for line in _plain(table.caption or "").splitlines()
                    if line.strip())
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def to_html(title: str, sections: list[Section]) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for index, section in enumerate(sections):
        parts.append(f'<section id="section-{index}"><h2>{html.escape(section.heading)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_html_table(block))
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png.read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            elif isinstance(block, Preformatted):
                parts.append(f"<pre>{html.escape(block.text.rstrip())}</pre>")
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write ``folder/report.md`` and ``folder/report.html`` (each atomically); return both paths."""
    md, page = folder / "report.md", folder / "report.html"
    for path, text in ((md, to_markdown(title, sections, folder)), (page, to_html(title, sections))):
        with atomic_file(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return md, page
