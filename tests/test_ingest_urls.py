"""URL lists through the real img2dataset, against a loopback HTTP server this test runs."""

from __future__ import annotations

import io
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from lakecurate.jobs import ingest
from lakecurate.runtime.config import replace
from lakecurate.runtime.errors import ConfigError

pytest.importorskip("img2dataset")

SLOW_S = 4


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48 + i, 40), (30 * i % 255, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


IMAGES = {f"/img/{i}.jpg": _jpeg(i) for i in range(4)}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        if self.path in IMAGES:
            self._send(200, "image/jpeg", IMAGES[self.path])
        elif self.path == "/slow.jpg":
            time.sleep(SLOW_S)  # longer than ingest.download_timeout_s
            self._send(200, "image/jpeg", IMAGES["/img/0.jpg"])
        elif self.path == "/page.jpg":
            self._send(200, "text/html", b"<html><body>not an image</body></html>")
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout case)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_url_list_is_downloaded_then_ingested(spark, lake, cfg, server, tmp_path):
    rows = [(f"{server}/img/{i}.jpg", f"a picture number {i}") for i in range(4)]
    rows += [
        (f"{server}/missing.jpg", "a 404"),
        (f"{server}/slow.jpg", "a timeout"),
        (f"{server}/page.jpg", "an html page"),
    ]
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\n" + "".join(f"{u},{c}\n" for u, c in rows))
    c = replace(
        cfg,
        sources=[{"uri": str(urls), "format": "auto"}],
        ingest={"download_timeout_s": 1, "download_threads": 4},
    )
    res = ingest.run(spark, c)

    pairs = [r.asDict() for r in lake.read(spark, "pairs").collect()]
    assert sorted(p["url"] for p in pairs) == sorted(u for u, _ in rows[:4])
    for p in pairs:
        assert p["image"] == IMAGES[p["url"][len(server) :]]  # bytes as served, not re-encoded
        assert p["caption"].startswith("a picture number")
    rejects = [r.asDict() for r in lake.read(spark, "rejects").collect()]
    by_reason = {}
    for r in rejects:
        by_reason.setdefault(r["reason"], []).append(r)
    failed = sorted(r["detail"].split(": ", 1)[0] for r in by_reason["download_failed"])
    assert failed == sorted([f"{server}/missing.jpg", f"{server}/slow.jpg"])
    assert all(r["source_uri"] == str(urls) for r in by_reason["download_failed"])
    # the html page downloads fine and is rejected by validation, attributed to its shard
    (page,) = by_reason["undecodable_image"]
    assert page["source_uri"].endswith(".tar")
    sources = {r.format: r.asDict() for r in lake.read(spark, "sources").collect()}
    assert sources["urls"]["source_uri"] == str(urls) and sources["urls"]["rows_rejected"] == 2
    assert sources["webdataset"]["rows_ok"] == 4 and sources["webdataset"]["rows_rejected"] == 1
    assert res.counts["pairs_added"] == 4

    # a re-run: the ledger skips the list before any download, nothing is committed
    versions = lake.versions()
    again = ingest.run(spark, c)
    assert again.counts["pairs_added"] == 0 and lake.versions() == versions


def test_url_list_without_img2dataset_says_how_to_install(spark, lake, cfg, tmp_path, monkeypatch):
    """img2dataset is the optional `urls` extra: without it, ingest stops before any
    write and names the source and the install command."""
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:9/x.jpg,a picture\n")
    monkeypatch.setitem(sys.modules, "img2dataset", None)  # what `import` sees when absent
    with pytest.raises(ConfigError) as e:
        ingest.run(spark, replace(cfg, sources=[{"uri": str(urls), "format": "auto"}]))
    assert str(urls) in str(e.value) and "lakecurate[urls]" in str(e.value)
    assert not lake.exists("pairs")
