"""Text tables: headers and rows of cell strings, as a rich Table or as Markdown.

Every report formats its own cells (`rows(...)` in each report module); this
module only lays them out.
rich is imported only when a rich Table is made.
"""


def rich_table(headers, rows, *, left: int = 1, title: str | None = None, styles=None):
    """A rich Table of `rows` under `headers`: the first `left` columns left-aligned, the rest
    right-aligned.

    Untitled, the table is light (a rule under the header, no frame) and its cells never
    wrap; with a title it is framed under that title, rich's default look. `styles`, one per
    row (None for plain), is a rich style such as "bold" or "dim".
    """
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False) if title is None else Table(title=title)
    for i, name in enumerate(headers):
        justify = "left" if i < left else "right"
        table.add_column(name, justify=justify, no_wrap=title is None)
    rows = list(rows)
    for row, style in zip(rows, [None] * len(rows) if styles is None else styles, strict=True):
        table.add_row(*row, style=style)
    return table


def markdown_table(headers, rows, *, right: bool = False) -> str:
    """A Markdown table of `rows` under `headers`; with right=True every column is
    right-aligned (`---:`)."""
    rule = "---:|" if right else "---|"
    lines = ["| " + " | ".join(headers) + " |", "|" + rule * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
