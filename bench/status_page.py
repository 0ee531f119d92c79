"""The status page with 10 and with 500 items queued, in Debian's headless chromium.

The status documents are the real engine's (``tests/status_worlds.py``: a dependent gate
with Zuul's default window of 20, #2 failed; and a batching gate whose first batch was
set aside), served with the page's own files. For each size this prints:

- the size of ``/status.json`` as everyone gets it and as the page asks for it
  (``?compact=1``), and the time the HTTP thread takes to make each from the published
  status (the estimates added, then the JSON; median of 5);
- the page's fetch and parse of the compact document (median of 5, in the browser);
- the page's render: building the DOM and laying it out (``window.ccciRender.ms``): the
  first one, the median of 10 redraws, and the median of 10 with every item laid out
  (the baseline: the page without ``content-visibility``, which skips items off screen).

    PYTHONPATH=. python3 bench/status_page.py [--sizes 10,500]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ccci_gate.store import Store  # noqa: E402
from ccci_gate.web.routes import Response  # noqa: E402
from ccci_gate.web.statusdoc import Estimates, compact_json  # noqa: E402
from status_worlds import gate_status, serve  # noqa: E402


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def median_ms(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def redraw(driver, runs: int = 10) -> float:
    return statistics.median(driver.execute_script(
        "window.ccciRedraw(); return window.ccciRender.ms") for _ in range(runs))


def measure(driver, size: int, batch: bool) -> dict:
    status = gate_status(size, batch)
    full_bytes = json.dumps(status, indent=1, sort_keys=True).encode()
    estimates = Estimates(Store(":memory:"))   # what the API adds, then how it answers
    row = {"items": size, "gate": "batching" if batch else "dependent",
           "full_kib": len(full_bytes) / 1024, "compact_kib": len(compact_json(status)) / 1024,
           "full_ms": median_ms(lambda: Response.json(estimates.annotate(status))),
           "compact_ms": median_ms(lambda: compact_json(estimates.annotate(status)))}
    web = serve(status)   # the page reads ?compact=1: the same document, not indented
    try:
        driver.get(web.url + "/")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            drawn = driver.execute_script("return window.ccciRender || null")
            if drawn and drawn["items"] == size:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"the page did not draw {size} items")
        row["first_ms"] = drawn["ms"]
        shown = driver.execute_script("return document.querySelectorAll('li.item').length")
        assert shown == size, (shown, size)
        row["fetch_ms"] = statistics.median(driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            (async () => { const out = [];
              for (let i = 0; i < 5; i++) { const t = performance.now();
                await (await fetch('/status.json', {cache: 'no-store'})).json();
                out.push(performance.now() - t); }
              done(out); })();""") or [0])
        row["render_ms"] = redraw(driver)
        # the baseline: every item laid out, as before content-visibility
        driver.execute_script("""const s = document.createElement('style');
            s.textContent = 'li.item { content-visibility: visible !important; }';
            document.head.appendChild(s);""")
        row["all_ms"] = redraw(driver)
    finally:
        web.shutdown()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,500")
    args = parser.parse_args()
    driver = browser()
    try:
        rows = [measure(driver, int(n), batch) for n in args.sizes.split(",")
                for batch in (False, True)]
    finally:
        driver.quit()
    print("| items | gate | /status.json KiB (server ms) | ?compact=1 KiB (server ms) "
          "| fetch+parse ms | first render ms | render ms | render ms, all laid out |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['items']} | {r['gate']} | {r['full_kib']:,.0f} ({r['full_ms']:.1f}) "
              f"| {r['compact_kib']:,.0f} ({r['compact_ms']:.1f}) | {r['fetch_ms']:.1f} "
              f"| {r['first_ms']:.1f} | {r['render_ms']:.1f} | {r['all_ms']:.1f} |")


if __name__ == "__main__":
    main()
