"""The rendered website in a real browser (Debian's Chromium, driven by Selenium).

Run after ``make render`` (``make test`` does both): the site in ``_book/`` is served over
http on 127.0.0.1 and every page is opened at a desktop (1280 px) and a phone (390 px) width;
screenshots of each go to ``_build/screenshots/`` (not committed) for a person to look at.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_book"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

if not (SITE / "index.html").exists():
    pytest.fail("no rendered site in _book/: run `make render` first", pytrace=False)
if CHROMIUM is None or DRIVER is None:
    pytest.fail("Chromium and its driver are not installed (Debian: apt-get install chromium chromium-driver; "
                "`make test` installs them)", pytrace=False)


def _pages() -> list[str]:
    """The book's pages as the site names them (from _quarto.yml)."""
    book = yaml.safe_load((ROOT / "_quarto.yml").read_text())["book"]
    pages = list(book["chapters"]) + list(book.get("appendices") or [])
    return [str(Path(p).with_suffix(".html")) for p in pages]


PAGES = _pages()


@pytest.fixture(scope="module")
def server():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # a page left mid-download: not an error
            pass

    handler = functools.partial(Quiet, directory=str(SITE))
    httpd = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def _driver(width: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--window-size={max(width, 500)},900"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    # the real width (a window cannot be narrower than 500 px), at a phone's 2x pixel density
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 2, "mobile": width < 600})
    return driver


@pytest.fixture(scope="module", params=[1280, 390], ids=["desktop", "phone"])
def browser(request):
    driver = _driver(request.param)
    driver.width = request.param
    yield driver
    driver.quit()


def _open(driver, url: str) -> None:
    driver.get(url)
    for _ in range(50):  # until the page and its images are loaded and MathJax has typeset
        ready = driver.execute_script(
            "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"
            " && (!window.MathJax || !MathJax.startup || MathJax.startup.document.state() >= 10)")
        if ready:
            return
        time.sleep(0.1)


@pytest.mark.parametrize("page", PAGES)
def test_page(browser, server, page):
    _open(browser, server + page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{page.replace('/', '_')}-{browser.width}.png"))
    # no page scrolls sideways: wide outputs and equations scroll inside their own box
    scroll, client = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client + 1, f"{page} scrolls horizontally at {browser.width} px ({scroll} > {client})"
    # every page links every chapter
    links = {urlparse(urljoin(server + page, a.get_attribute("href") or "")).path.lstrip("/")
             for a in browser.find_elements("css selector", "a[href]")}
    missing = [p for p in PAGES if p not in links and p != page]
    assert not missing, f"{page} does not link {missing}"
    # every image loads, and is sharp on a 2x screen: a vector, or twice its displayed width
    for img in browser.find_elements("css selector", "img"):
        src, natural, shown = (img.get_attribute("src"), browser.execute_script("return arguments[0].naturalWidth", img),
                               browser.execute_script("return arguments[0].clientWidth", img))
        assert natural > 0, f"{page}: image {src} did not load"
        assert src.endswith(".svg") or natural >= 2 * shown, f"{page}: image {src} is {natural} px shown at {shown}"
        assert img.get_attribute("alt"), f"{page}: image {src} has no alt text"
    # every anchor a link on the page points to exists
    for a in browser.find_elements("css selector", "a[href*='#']"):
        target = urlparse(urljoin(server + page, a.get_attribute("href")))
        if target.path.lstrip("/") == page and target.fragment:
            assert browser.execute_script("return !!document.getElementById(arguments[0])", target.fragment), \
                f"{page}: anchor #{target.fragment} does not exist"
    # no equation left as LaTeX source (a $$ block the Markdown reader did not recognise)
    text = browser.find_element("css selector", "article").text
    for raw in ("$$", "\\begin{", "{numref}", "numref\\"):
        assert raw not in text, f"{page}: {raw!r} in the text, an equation or reference not rendered"
    # every sidebar link the reader can see works: the book's PDF, a chapter's notebook
    for a in browser.find_elements("css selector", ".sidebar-downloads a"):
        with urllib.request.urlopen(a.get_attribute("href")) as response:
            assert response.status == 200, a.get_attribute("href")
    # no errors in the console (a missing script or stylesheet, a failed MathJax)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert not errors, f"{page}: console errors {errors}"


def test_chapters_show_their_warnings_dataframes_and_equations(browser, server):
    _open(browser, server + "chapters/04-coma.html")
    warnings = [w for w in browser.find_elements("css selector", ".output.stderr") if w.is_displayed()]
    assert any("SingularFitWarning" in w.text for w in warnings)
    assert browser.find_elements("css selector", "mjx-container"), "MathJax typeset no equation"
    assert browser.find_elements("css selector", "figure img[alt]")
    _open(browser, server + "chapters/01-hsb.html")
    tables = browser.find_elements("css selector", ".cell_output table.dataframe")
    assert len(tables) >= 5 and tables[0].find_elements("css selector", "th")
    assert browser.find_elements("css selector", "button.copybtn"), "code cells have no copy button"


def test_search_finds_a_word_on_its_page(browser, server):
    _open(browser, server + "search.html?q=Kenward")
    for _ in range(100):
        hits = [a.get_attribute("href") for a in browser.find_elements("css selector", "#search-results a")]
        if hits:
            break
        time.sleep(0.1)
    assert any("chapters/01-hsb.html" in h for h in hits), hits


def test_downloads_work(browser, server):
    _open(browser, server + "index.html")
    hrefs = [a.get_attribute("href") for a in browser.find_elements("css selector", "a[href]")]
    for suffix, magic in [(".pdf", b"%PDF"), (".csv", b"id,section"), (".ipynb", b"{")]:
        url = next(h for h in hrefs if h.endswith(suffix))
        with urllib.request.urlopen(url) as response:
            assert response.status == 200 and response.read(20).startswith(magic), url


def test_syntax_colours_pass_wcag_aa(browser, server):
    """Every token colour of the highlighted code against the code block's background: a
    contrast ratio of at least 4.5 (WCAG 2.1 AA for normal text)."""
    _open(browser, server + "chapters/01-hsb.html")
    pairs = browser.execute_script("""
      const rgb = s => (s.match(/[\\d.]+/g) || []).slice(0, 3).map(Number);
      const out = [];
      for (const span of document.querySelectorAll('div.cell_input .highlight pre span')) {
        let bg = null, e = span;
        while (e && !bg) { const c = getComputedStyle(e).backgroundColor;
          if (c && !c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') bg = c; e = e.parentElement; }
        out.push([span.className, rgb(getComputedStyle(span).color), rgb(bg || 'rgb(255,255,255)')]);
      }
      return out;""")
    assert len(pairs) > 50

    def luminance(c):
        c = [v / 255 for v in c]
        c = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    worst = {}
    for cls, fg, bg in pairs:
        hi, lo = sorted([luminance(fg), luminance(bg)], reverse=True)
        worst[cls] = min(worst.get(cls, 99), (hi + 0.05) / (lo + 0.05))
    failing = {cls: round(r, 2) for cls, r in worst.items() if r < 4.5}
    assert not failing, f"token classes below 4.5:1: {failing}"


def test_the_visible_menu_buttons_work(browser, server):
    """The chapters button opens the navigation drawer on a phone (and hides the sidebar on a
    desktop); the button the reader sees is the one the theme's script listens to."""
    _open(browser, server + "chapters/02-exercise.html")
    buttons = [b for b in browser.find_elements("css selector", ".primary-toggle") if b.is_displayed()]
    assert buttons, "no visible chapters button"
    buttons[0].click()
    time.sleep(0.5)
    if browser.width < 992:
        opened = browser.execute_script(
            "const d = document.querySelector('#pst-primary-sidebar-modal'); return !!(d && d.open);")
        assert opened, "the chapters button did not open the navigation drawer"
    else:
        hidden = browser.execute_script(
            "return document.querySelector('#pst-primary-sidebar').classList.contains('pst-sidebar-hidden');")
        assert hidden, "the chapters button did not hide the sidebar"


def test_reproduction_tables_keep_their_columns(browser, server):
    """A record id with "|" in it (max|grad|, Pr(>|z|)) stays in its cell: every row of the
    explained-records tables has the header's three cells."""
    _open(browser, server + "chapters/03-migraine.html")
    tables = [t for t in browser.find_elements("css selector", ".cell_output table:not(.dataframe)")
              if "record" in t.find_element("css selector", "thead").text]
    assert tables, "no explained-records table"
    for table in tables:
        counts = browser.execute_script(
            "return Array.from(arguments[0].rows, r => r.cells.length);", table)
        assert set(counts) == {3}, counts


def test_the_sidebar_lists_the_chapters_sections(browser, server):
    """As in a Quarto book: every chapter, and the current chapter's sections under it."""
    _open(browser, server + "chapters/01-hsb.html")
    hrefs = [a.get_attribute("href") or "" for a in browser.find_elements("css selector", "#pst-primary-sidebar a")]
    for target in ("#sec-hsb-examine", "#sec-hsb-lmer", "#sec-hsb-wald", "02-exercise.html", "04-coma.html"):
        assert any(h.endswith(target) for h in hrefs), f"the sidebar has no link to {target}"


def test_the_appendix_output_opens_with_its_numbers_marked(browser, server):
    """A chapter output's appendix block is folded; its toggle opens it, and then each
    published number is marked by colour and a symbol, in the appendix's lines and in ours;
    an explained number carries its reason and links to the note that gives its evidence."""
    style = ("const s = getComputedStyle(arguments[0]), a = getComputedStyle(arguments[0], '::after');"
             "return [s.backgroundColor, a.content];")
    for page in ("chapters/01-hsb.html", "chapters/03-migraine.html"):
        _open(browser, server + page)
        pairs = browser.find_elements("css selector", "details.appendix-pair")
        assert len(pairs) >= 10 and not any(p.get_attribute("open") for p in pairs), "folded by default"
        pair = next(p for p in pairs if p.find_elements("css selector", ".pub-explained")) \
            if page.endswith("03-migraine.html") else pairs[0]
        cell = browser.execute_script("return arguments[0].closest('div.cell')", pair)
        ours = cell.find_elements("css selector", ".pub-ours .pub")
        assert ours and browser.execute_script(style, ours[0])[1] in ("none", "normal"), "ours unmarked while folded"
        summary = pair.find_element("css selector", "summary")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", summary)
        summary.click()
        assert pair.get_attribute("open") is not None, f"{page}: the toggle did not open"
        theirs = pair.find_elements("css selector", ".pub")
        assert theirs and all(m.is_displayed() for m in theirs)
        symbols = {"exact": '"✓"', "last_digit": '"±"', "bound": '"≤"', "explained": '"†"'}
        for mark in theirs + ours:
            background, symbol = browser.execute_script(style, mark)
            assert background not in ("rgba(0, 0, 0, 0)", "transparent"), mark.get_attribute("data-record")
            assert symbol == symbols[mark.get_attribute("data-status")], (mark.get_attribute("data-record"), symbol)
        for mark in pair.find_elements("css selector", ".pub-explained"):
            assert mark.get_attribute("title").startswith("explained: published")
            note = mark.get_attribute("href").split("#")[1]
            assert browser.find_element("css selector", f"li#{note}").is_displayed()
