"""The one HTML writer for every page the suite publishes (study report, compare, demo index).

Pages are rendered by Jinja2 with autoescaping: every string that comes from data (dataset,
test-set, run, metric and figure names, table cells, notes) is escaped in text and in attributes,
and every link to a file next to the page is URL-quoted. Each page carries a Content Security
Policy: no script at all, images only from the page's own folder or ``data:`` URIs, the one inline
stylesheet allowed by its hash. A name like ``"><img src=x onerror=...>`` is shown as text, and
even markup that got through would not run.

A page is a title, a stylesheet and a list of blocks ``(kind, payload)``:

- ``h1``/``h2``/``h3``/``p``/``note``/``warn``: text;
- ``ul``: a list of texts; ``links``: a list of ``(text, href)``;
- ``table``: a ``pandas.DataFrame`` (cells formatted by ``fmt``);
- ``figure``: ``dict(src=..., alt=..., id=None, caption=None, links=[(text, href)])``; ``src`` is a
  ``data:`` URI or a file name next to the page.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from collections.abc import Callable, Iterable

import jinja2

_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>{{ title }}</title><style>{{ style | safe }}</style></head><body>
{%- for kind, x in blocks %}
{%- if kind in ("h1", "h2", "h3") %}
<{{ kind }}>{{ x }}</{{ kind }}>
{%- elif kind == "p" %}
<p>{{ x }}</p>
{%- elif kind == "note" %}
<p class="note">{{ x }}</p>
{%- elif kind == "warn" %}
<p class="warn"><strong>{{ x }}</strong></p>
{%- elif kind == "ul" %}
<ul>{% for item in x %}<li>{{ item }}</li>{% endfor %}</ul>
{%- elif kind == "links" %}
<ul>{% for text, href in x %}<li><a href="{{ href | href }}">{{ text }}</a></li>{% endfor %}</ul>
{%- elif kind == "table" %}
<table class="t"><thead><tr>{% for c in x.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{%- for row in x.itertuples(index=False) %}<tr>{% for v in row %}<td>{{ fmt(v) }}</td>{% endfor %}</tr>{% endfor -%}
</tbody></table>
{%- elif kind == "figure" %}
<figure{% if x.get("id") %} id="{{ x.id }}"{% endif %}><img src="{{ x.src | href }}" alt="{{ x.alt }}">
{%- if x.get("caption") or x.get("links") %}<figcaption>{{ x.get("caption") or "" }}
{%- for text, target in x.get("links") or () %}{% if not loop.first %} · {% elif x.get("caption") %}: {% endif %}
<a href="{{ target | href }}">{{ text }}</a>{% endfor %}</figcaption>{% endif %}</figure>
{%- endif %}
{%- endfor %}
</body></html>
"""


def href(target: str) -> str:
    """A ``data:image/`` URI as it is; anything else is a relative path from the page, URL-quoted
    (``:``, ``?``, ``#`` included), so a name can become neither a scheme (``javascript:``) nor a
    query, and never absolute or protocol-relative (``//host``)."""
    if target.startswith("data:image/"):
        return target
    quoted = urllib.parse.quote(target, safe="/")
    return "./" + quoted.lstrip("/") if quoted.startswith("/") else quoted


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def csp(style: str) -> str:
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; img-src 'self' data:; style-src 'sha256-{digest}'; script-src 'none'; "
            "object-src 'none'; base-uri 'none'; form-action 'none'")


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENV.filters["href"] = href
_PAGE = _ENV.from_string(_TEMPLATE)


def render(title: str, blocks: Iterable[tuple[str, object]], style: str, fmt: Callable[[object], str] = str) -> str:
    """The page as a string (see the module docstring for ``blocks``)."""
    return _PAGE.render(title=title, blocks=list(blocks), style=style, csp=csp(style), fmt=fmt)
