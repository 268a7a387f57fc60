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
