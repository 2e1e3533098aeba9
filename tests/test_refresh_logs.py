"""Structured logs: JSON lines on stderr or in a file, and the run summary."""

from __future__ import annotations

import json
import logging

import pytest

from lakecurate.runtime.logs import RunSummary, configure_logging, event, read_events


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_to_stderr_carry_fields(restore_logging, capsys):
    configure_logging(json_lines=True)
    event(logging.getLogger("lakecurate.test"), "stage_start", "ingest started", stage="ingest")
    logging.getLogger("lakecurate.test").warning("plain %s", "message")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "stage_start" and lines[0]["stage"] == "ingest"
    assert lines[0]["msg"] == "ingest started" and lines[0]["level"] == "INFO"
    assert lines[1]["msg"] == "plain message" and lines[1]["level"] == "WARNING"
    assert lines[0]["ts"].endswith("+00:00")


def test_log_file_is_json_lines_even_with_text_stderr(restore_logging, tmp_path, capsys):
    path = tmp_path / "logs" / "refresh.jsonl"
    configure_logging(json_lines=False, log_file=str(path))
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("it failed")
    event(logging.getLogger("x"), "summary", "done", rows=3)
    for h in logging.getLogger().handlers:
        h.flush()
    events = read_events(path)
    assert events[0]["msg"] == "it failed" and "ValueError: boom" in events[0]["exc"]
    assert events[1]["event"] == "summary" and events[1]["rows"] == 3
    assert "it failed" in capsys.readouterr().err  # stderr stays text


def test_read_events_skips_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"event": "a"}\n{"event": "b", "tru')
    assert read_events(path) == [{"event": "a"}]
    assert read_events(tmp_path / "missing.jsonl") == []


def test_run_summary_collects_stages():
    s = RunSummary("run-1")
    a = s.stage("ingest")
    a.status, a.rows_in, a.rows_out = "ok", 10, 8
    a.written_versions = {"pairs": 1, "sources": 1}
    b = s.stage("embed")
    b.status, b.written_versions = "ok", {"embeddings": 0}
    s.outcome = "published default v1"
    d = s.to_dict()
    assert d["versions_written"] == {"pairs": 1, "sources": 1, "embeddings": 0}
    assert [x["stage"] for x in d["stages"]] == ["ingest", "embed"]
    assert d["stages"][0]["rows_out"] == 8
    text = s.text()
    assert "published default v1" in text and "pairs@v1" in text
    json.dumps(d)  # serializable
