"""Redaction: configured secrets and secret-named fields never reach the output."""

from __future__ import annotations

import io
import json

import pytest

from jobs import log


@pytest.fixture
def captured():
    stream = io.StringIO()
    log.clear_secrets()
    log.configure("json", stream=stream, job="test")
    yield stream
    log.clear_secrets()


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_events_are_json_lines_with_timestamp_level_job_and_event(captured):
    log.get_logger().info("hello", count=3)
    [event] = lines(captured)
    assert event["event"] == "hello" and event["level"] == "info" and event["job"] == "test" and event["count"] == 3
    assert event["timestamp"].endswith("Z")


def test_registered_secret_values_are_removed_everywhere(captured):
    log.register_secrets(["s3cr3t-value-xyz"])
    log.get_logger().info("login failed for s3cr3t-value-xyz", nested={"list": ["a s3cr3t-value-xyz b"]})
    assert "s3cr3t-value-xyz" not in captured.getvalue()
    assert "[REDACTED]" in captured.getvalue()


def test_fields_named_like_secrets_are_redacted(captured):
    log.get_logger().info("x", password="p", client_secret="c", session_token="t", authorization="Bearer z", fingerprint="keep")
    [event] = lines(captured)
    assert event["password"] == event["client_secret"] == event["session_token"] == event["authorization"] == "[REDACTED]"
    assert event["fingerprint"] == "keep"


def test_exceptions_are_redacted_too(captured):
    log.register_secrets(["hunter2-canary"])
    try:
        raise RuntimeError("bad password hunter2-canary")
    except RuntimeError:
        log.get_logger().exception("boom")
    assert "hunter2-canary" not in captured.getvalue()
    assert "RuntimeError" in captured.getvalue()


# ---------------------------------------------------------------- where output goes, and how it reads


@pytest.fixture
def streams():
    out, err = io.StringIO(), io.StringIO()
    log.clear_secrets()
    yield out, err
    log.clear_secrets()


def test_info_goes_to_stdout_warnings_and_errors_to_stderr(streams):
    out, err = streams
    log.configure("json", stream=out, err_stream=err, job="test")
    log.get_logger().info("fine")
    log.get_logger().warning("careful")
    log.get_logger().error("broken")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["fine"]
    assert [json.loads(line)["event"] for line in err.getvalue().splitlines()] == ["careful", "broken"]


def console_lines(streams, emit):
    out, err = streams
    log.configure("console", stream=out, err_stream=err, job="reap")
    emit(log.get_logger())
    log.flush()
    return out.getvalue().splitlines(), err.getvalue().splitlines()


def test_a_plan_is_one_line_per_action_and_says_would_in_a_dry_run(streams):
    from jobs.plan import Action, Plan, Report, log_plan

    plan = Plan((Action(kind="create-template", target="template/a", reason="missing on coderd",
                        details={"fingerprint": "sha256:" + "ab" * 32}),
                 Report(kind="nothing", target="template/b", reason="up to date")))
    out, _ = console_lines(streams, lambda lg: log_plan(lg, plan, dry_run=True))
    assert len(out) == 2
    assert 'info  would create-template template/a  reason="missing on coderd" fingerprint=sha256:abababababab' \
        in out[0] and "[" not in out[0]  # no Python list repr
    assert "info  nothing template/b" in out[1] and "would" not in out[1]


def test_a_summary_is_a_table_of_what_was_checked_changed_deferred_and_failed(streams):
    out, _ = console_lines(streams, lambda lg: log.summary(lg, checked=32, changed=5, deferred=27, failed=0,
                                                            dry_run=True, scanned=32))
    head, row = out
    assert head.split()[1:] == ["info", "summary", "checked", "would", "change", "deferred", "failed"]
    assert row.split() == ["reap", "(dry", "run)", "32", "5", "27", "0"]
    assert head.index("deferred") + len("deferred") == row.index("27") + 2  # right-aligned under its heading


def test_the_summary_event_carries_the_same_counts_as_fields(streams):
    out, err = streams
    log.configure("json", stream=out, err_stream=err, job="doctor")
    log.summary(log.get_logger(), checked=3, changed=0, columns={"drift": 2}, healthy=False)
    [event] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {k: event[k] for k in ("event", "checked", "changed", "deferred", "failed", "drift", "healthy")} == {
        "event": "summary", "checked": 3, "changed": 0, "deferred": 0, "failed": 0, "drift": 2, "healthy": False}
    assert event["table"] == ["checked", "changed", "deferred", "failed", "drift"]


def test_many_alike_events_are_one_console_line_with_a_count_and_every_one_in_json(streams):
    def emit(lg):
        for i in range(27):
            lg.info("deferred", bulk=True, target=f"workspace/u/w{i}", reason="over REAP_MAX_STOPS=5")
        lg.info("stop", action="stop", target="workspace/u/old", reason="idle", idle_s=107_640)

    out, _ = console_lines(streams, emit)
    assert len(out) == 2
    assert "deferred ×27: over REAP_MAX_STOPS=5" in out[0]
    assert "stop workspace/u/old  reason=idle idle=29.9h" in out[1]
    json_out = io.StringIO()
    log.configure("json", stream=json_out, job="reap")
    emit(log.get_logger())
    assert len(json_out.getvalue().splitlines()) == 28


def test_console_info_lines_fit_the_width_but_warnings_are_never_cut(streams):
    long = "x" * 300
    out, err = console_lines(streams, lambda lg: (lg.info("settings", A=long, B="short"),
                                                  lg.warning("drift template/a", reason=long)))
    assert len(out) == 1 and len(out[0]) <= 160 and "B=short" in out[0]
    assert len(err) == 1 and long in err[0]


def test_the_console_is_redacted_too(streams):
    log.register_secrets(["s3cr3t-value-xyz"])
    out, err = console_lines(streams, lambda lg: (lg.info("hello s3cr3t-value-xyz", password="p"),
                                                  lg.error("login failed for s3cr3t-value-xyz")))
    text = "\n".join(out + err)
    assert "s3cr3t-value-xyz" not in text and "password=[REDACTED]" in text


def test_human_seconds_reads_like_the_demo_banner():
    assert [log.human_seconds(s) for s in (0.42, 45, 720, 7200, 107_640)] == ["0.4s", "45s", "12m", "2h", "29.9h"]
