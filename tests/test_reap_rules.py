"""Reaper policy parsing: rules file, REAP_EXEMPT globs, durations. Pure, no servers."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from jobs.durations import parse_duration
from jobs.errors import ConfigError
from jobs.reap_rules import Policy, glob_match, load_rules, parse_exempt, parse_idle_after, parse_rules, policy_from_settings

H2 = timedelta(hours=2)


def test_rules_first_match_wins_and_globs_are_case_insensitive():
    rules = parse_rules({"rules": [
        {"template": "ameide-gitops", "exempt": True},
        {"owner": "ALICE", "workspace": "long-*", "idle_after": "8h"},
        {"owner": "alice", "idleAfter": "30m"},
        {"idle_after": "1d"},
    ]})
    p = Policy(H2, parse_exempt("bob/keep-*"), rules)
    assert p.decide("alice", "x", "ameide-gitops").exempt
    d = p.decide("Alice", "LONG-run", "ameide-dev")
    assert (d.exempt, d.idle_after, d.source) == (False, timedelta(hours=8), "rule[1]")
    assert p.decide("alice", "short", "ameide-dev").idle_after == timedelta(minutes=30)
    assert p.decide("carol", "w", "t").idle_after == timedelta(days=1)
    # REAP_EXEMPT is never overridden by a rule
    d = p.decide("bob", "keep-me", "ameide-dev")
    assert d.exempt and d.source == "REAP_EXEMPT" and d.idle_after == timedelta(days=1)
    assert not Policy(H2).decide("bob", "keep-me", "t").exempt


def test_exempt_false_rule_keeps_default_idle_and_shadows_later_rules():
    p = Policy(H2, (), parse_rules({"rules": [{"owner": "ci-*", "exempt": False}, {"idle_after": "9h"}]}))
    assert p.decide("ci-bot", "w", "t") .idle_after == H2
    assert p.decide("dev", "w", "t").idle_after == timedelta(hours=9)


@pytest.mark.parametrize("doc, words", [
    ({"rules": {"owner": "a"}}, ["rules", "list"]),
    ({"rules": ["x"]}, ["rule 0", "mapping"]),
    ({"rules": [{"owner": "a", "exempt": True}, {"owner": "b", "idle": "2h"}]}, ["rule 1", "idle"]),
    ({"rules": [{"owner": "a", "idle_after": "2 hours"}]}, ["rule 0", "idle_after"]),
    ({"rules": [{"owner": "a", "idle_after": "1m"}]}, ["rule 0", "shorter"]),
    ({"rules": [{"owner": "a", "idle_after": True}]}, ["rule 0", "idle_after"]),
    ({"rules": [{"owner": 3, "exempt": True}]}, ["rule 0", "owner"]),
    ({"rules": [{"owner": "", "exempt": True}]}, ["rule 0", "owner"]),
    ({"rules": [{"owner": "a", "exempt": "yes"}]}, ["rule 0", "exempt"]),
    ({"rules": [{"owner": "a"}]}, ["rule 0", "idle_after"]),
    ({"rules": [{"owner": "a", "exempt": True, "idle_after": "3h"}]}, ["rule 0", "contradictory"]),
    ({"rules": [{"idle_after": "3h", "idleAfter": "3h"}]}, ["rule 0", "both"]),
    ({"rule": []}, ["unknown", "rule"]),
    (["a"], ["mapping"]),
    ("rules", ["mapping"]),
])
def test_bad_rules_name_index_and_field(doc, words):
    with pytest.raises(ConfigError) as exc:
        parse_rules(doc)
    for w in words:
        assert w in str(exc.value)


def test_empty_documents_mean_no_rules():
    assert parse_rules(None) == ()
    assert parse_rules({"rules": None}) == ()
    assert parse_rules({"rules": []}) == ()


def test_load_rules_file(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - template: ameide-*\n    idle_after: 4h\n")
    assert load_rules(f)[0].idle_after == timedelta(hours=4)
    f.write_text("rules: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_rules(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError):
        load_rules(f)


def test_exempt_globs():
    assert parse_exempt(" alice/* , */keep-*,") == (("alice", "*"), ("*", "keep-*"))
    assert parse_exempt(None) == () and parse_exempt("") == ()
    for bad in ("alice", "a/b/c", "/x", "x/", " / "):
        with pytest.raises(ConfigError, match="REAP_EXEMPT entry 0"):
            parse_exempt(bad)


def test_policy_from_settings_checks_idle_after():
    assert policy_from_settings("90m", None, None).idle_after == timedelta(minutes=90)
    with pytest.raises(ConfigError, match="REAP_IDLE_AFTER"):
        policy_from_settings("2m", None, None)


def test_glob_match():
    assert glob_match("Alice", "alice") and glob_match("a?c", "ABC") and glob_match("[ab]*", "bob")
    assert not glob_match("alice", "alice2")


# -- properties: any input -> a result or ConfigError/ValueError, never another exception --
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
_rule_like = st.dictionaries(
    st.sampled_from(["template", "owner", "workspace", "idle_after", "idleAfter", "exempt", "other"]),
    st.one_of(_scalars, st.sampled_from(["2h", "90m", "1h30m", "3600", "*", "ameide-*", "0s", "1e9h"])), max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_values, st.fixed_dictionaries({"rules": st.lists(st.one_of(_rule_like, _values), max_size=5)})))
def test_parse_rules_total(doc):
    try:
        rules = parse_rules(doc)
    except ConfigError:
        return
    p = Policy(H2, (), rules)
    d = p.decide("alice", "ws", "tpl")
    assert d.idle_after >= timedelta(minutes=5)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_rules_yaml_text_total(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("r") / "rules.yaml"
    f.write_text(text, encoding="utf-8")
    try:
        load_rules(f)
    except ConfigError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=30), st.from_regex(r"\A[0-9.]{0,400}(ms|s|m|h|d|w)?[0-9]{0,3}\Z")))
def test_parse_duration_total(text):
    try:
        d = parse_duration(text)
    except ValueError:
        return
    assert d.total_seconds() > 0


@settings(max_examples=300, deadline=None)
@given(_scalars)
def test_parse_idle_after_total(value):
    try:
        parse_idle_after(value, "X")
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=4)))
def test_parse_exempt_total(text):
    try:
        pairs = parse_exempt(text)
    except ConfigError:
        return
    for owner, ws in pairs:
        glob_match(owner, "alice") and glob_match(ws, "ws")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_glob_match_total(pattern, value):
    assert glob_match(pattern, value) in (True, False)


def test_yaml_roundtrip_of_chart_style_rules():
    doc = yaml.safe_load(yaml.safe_dump({"rules": [{"template": "ameide-gitops", "idleAfter": "8h"}, {"owner": "svc-*", "exempt": True}]}))
    rules = parse_rules(doc)
    assert rules[0].idle_after == timedelta(hours=8) and rules[1].exempt
