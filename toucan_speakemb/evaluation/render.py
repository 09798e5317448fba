"""A report as a list of blocks, written once as Markdown and once as self-contained HTML (images inline)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<b>\1</b>"),
           (re.compile(r"\*([^*]+)\*"), r"<i>\1</i>")]

_CSS = """body{font-family:system-ui,sans-serif;max-width:75em;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em}
td{text-align:right}td:first-child,th:first-child{text-align:left}tr.ref td{background:#f4f4f4}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
code{background:#f4f4f4;padding:0 .2em}.scroll{overflow-x:auto}"""


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


class Document:
    """Blocks: headings, paragraphs, bullet lists, tables and images (PNG files next to the report)."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: List[Tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], reference_rows: Sequence[int] = ()) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows], set(reference_rows)))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", Path(path), caption))

    def to_markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "ul":
                out += [f"- {item}" for item in b[1]] + [""]
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |")
                out.append("|---|" + "---:|" * (len(b[1]) - 1))
                out += ["| " + " | ".join(r) + " |" for r in b[2]] + [""]
            elif b[0] == "img":
                out += [f"![{b[2]}]({_relative(b[1], base)})", "", f"*{b[2]}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_inline_html(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline_html(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in b[1])
                body = "".join(
                    ('<tr class="ref">' if i in b[3] else "<tr>") + "".join(f"<td>{_inline_html(c)}</td>" for c in r)
                    + "</tr>" for i, r in enumerate(b[2]))
                out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                           f"</table></div>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{_inline_html(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def fmt(value: Optional[float], spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return format(value, spec)
