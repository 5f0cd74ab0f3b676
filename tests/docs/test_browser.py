"""The built site in a real headless Chromium (Debian's ``chromium`` package).

Served over HTTP on 127.0.0.1 at a free port. Checks, in the browser's own layout:
the API page shows ``ClassBalancedLoss`` next to its formula laid out as mathematics
(a subscript drawn lower than its base), and the site search for "effective number"
lists the API page.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

CHECK_PAGE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="f" src="api.html" style="width:1200px;height:3000px"></iframe>
<script>
document.getElementById("f").addEventListener("load", () => {
  const out = document.getElementById("result");
  try {
    const doc = document.getElementById("f").contentDocument;
    const sig = doc.getElementById("classbalanced.ClassBalancedLoss");
    const section = doc.getElementById("class-balanced-losses");
    const math = section.querySelector("math[display=block]");
    const sub = math.querySelector("msub");
    const base = sub.children[0].getBoundingClientRect();
    const script = sub.children[1].getBoundingClientRect();
    const box = math.getBoundingClientRect();
    out.textContent = JSON.stringify({
      signature: sig.innerText,
      signatureHeight: sig.getBoundingClientRect().height,
      mathml: math instanceof doc.defaultView.MathMLElement,
      mathText: math.textContent,
      mathWidth: box.width,
      mathAboveSignature: box.bottom <= sig.getBoundingClientRect().top,
      subscriptLowered: script.bottom > base.bottom,
    });
  } catch (e) { out.textContent = "error: " + e; }
});
</script></body></html>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
        print(f"SKIPPED: {msg}")
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="session")
def chromium() -> str:
    return _chromium()


@pytest.fixture
def served(chromium, site):  # chromium first: no site build where the browser is missing
    """The site on http://127.0.0.1:<free port>/, for the length of one test."""
    (site / "_check_math.html").write_text(CHECK_PAGE)
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the base class's name
        pass


def _dump_dom(chromium: str, url: str, profile: Path) -> str:
    cmd = [
        chromium,
        "--headless",
        f"--user-data-dir={profile}",  # a fresh profile: no lock shared with another run
        "--disable-dev-shm-usage",
        "--no-sandbox",  # the tests may run as root (CI does)
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1280,1024",
        "--virtual-time-budget=10000",  # run the page's scripts (search index, checks) first
        "--dump-dom",
        url,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_api_page_shows_class_balanced_loss_with_its_formula_rendered(served, chromium, tmp_path):
    dom = _dump_dom(chromium, f"{served}/_check_math.html", tmp_path / "profile")
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[:2000]
    text = found.group(1)
    assert not text.startswith(("pending", "error")), text
    state = json.loads(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert "ClassBalancedLoss" in state["signature"] and state["signatureHeight"] > 0
    assert state["mathml"] and state["mathWidth"] > 100
    assert "CB" in state["mathText"] and "$" not in state["mathText"]
    assert "\\" not in state["mathText"]  # no TeX source left over
    assert state["mathAboveSignature"] and state["subscriptLowered"], state


def test_search_for_effective_number_finds_the_api_page(served, chromium, tmp_path):
    dom = _dump_dom(chromium, f"{served}/search.html?q=effective+number", tmp_path / "profile")
    results = re.search(r'<ul[^>]*class="search"[^>]*>(.*?)</ul>', dom, re.S)
    assert results is not None, "no search results in the page"
    pages = re.findall(r'<a href="([^"#?]+)', results.group(1))
    assert "api.html" in pages, pages
