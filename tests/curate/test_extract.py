from lmforge.curate.container import widen_to_container
from lmforge.curate.document import Document
from lmforge.curate.extract import Extractor

from .webdata import PROSE

_MORE = ("Templates can read the current page from the request, so a base template can mark the "
         "item that matches it without any help from the view functions that render the pages.")
# A documentation page: trafilatura drops the section whose id holds "menu" and the code in it.
_DOC_PAGE = f"""<html><head><title>Tricks</title></head><body>
<div class="related" role="navigation"><ul><li><a href="/">Project home</a></li><li>Next topic</li></ul></div>
<div class="body" role="main"><section id="tricks"><h1>Tricks</h1><p>{PROSE}</p>
<section id="highlighting-active-menu-items"><h2>Highlighting Active Menu Items</h2>
<p>Often you want to have a navigation bar with an active navigation item, which is simple to achieve.</p>
<div class="highlight"><pre>navigation_bar = [
    ('/downloads/', 'downloads', 'Downloads'),
]</pre></div></section>
<p>{_MORE}</p></section></div>
<div class="footer">Copyright 2024 All rights reserved. Created using Sphinx.</div>
</body></html>"""


def test_extractor_keeps_what_trafilatura_drops_inside_the_main_container():
    before = Extractor(container_growth=0)(Document(id="a", html=_DOC_PAGE.encode()))
    assert "Highlighting Active Menu Items" not in before.text  # the loss this step exists for
    out = Extractor()(Document(id="a", html=_DOC_PAGE.encode()))
    assert "Highlighting Active Menu Items" in out.text
    assert "    ('/downloads/', 'downloads', 'Downloads')," in out.text  # <pre> kept as it is
    assert "Project home" not in out.text and "All rights reserved" not in out.text


def test_container_is_not_taken_when_it_adds_too_much():
    first, last = "A short article about shelves in the library.", "It ends with one more sentence of text."
    html = f"<html><body><div><p>{first}</p><p>{PROSE} {PROSE}</p><p>{last}</p></div></body></html>"
    extracted = f"{first}\n{last}"
    assert widen_to_container(html, extracted, max_growth=1.5) == extracted
    assert widen_to_container(html, extracted, max_growth=100) == f"{first}\n{PROSE} {PROSE}\n{last}"
