"""Review: the status page links only to http(s) URLs or to its own site. A change URL
such as ``/\\evil.example`` passed ``safeUrl``'s "local" test (it starts with ``/`` and not
``//``) but a browser reads a backslash as a slash: a link off the site, drawn as the
gate's own. A real chromium resolves every link the page drew."""
from __future__ import annotations

from urllib.parse import urlsplit

from status_worlds import gate_status, serve
from test_status_page import GATE_ITEMS, css, see

TRICKS = ("/\\evil.example/a", "/\t/evil.example/b", "\\\\evil.example/c", "/\\/evil.example/d")


def test_a_change_url_that_a_browser_reads_as_another_site_is_not_linked(browser):
    status = gate_status(len(TRICKS) + 1)
    items = status["pipelines"][0]["queues"][0]["items"]
    for item, url in zip(items, TRICKS):
        item["change"]["url"] = url
    items[len(TRICKS)]["change"]["url"] = "/items/local"   # a local link stays a link
    web = serve(status)
    try:
        browser.get(web.url + "/")
        see(browser, "items drawn", lambda: len(css(browser, GATE_ITEMS)) == len(items))
        hrefs = browser.execute_script(f"""
            return [...document.querySelectorAll('{GATE_ITEMS}')].map(
              (e) => {{ const a = e.querySelector('.change'); return a.href || null; }});""")
    finally:
        web.shutdown()
    page = urlsplit(web.url)
    for url, href in zip(TRICKS, hrefs):
        assert href is None or urlsplit(href).netloc == page.netloc, f"{url!r} -> {href}"
    assert hrefs[len(TRICKS)] == web.url + "/items/local"
