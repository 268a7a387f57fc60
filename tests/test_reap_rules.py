"""Reaper policy parsing: rules file, REAP_EXEMPT globs, durations. Pure, no servers."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.durations import parse_duration
from jobs.errors import ConfigError
from jobs.reap_rules import Policy, glob_match, load_rules, parse_exempt, parse_idle_after, parse_rules
from jobs.settings import ReapSettings, load

H2 = timedelta(hours=2)


def test_rules_first_match_wins_and_globs_are_case_insensitive():
    rules = parse_rules({"rules": [
        {"id": "gitops-exempt", "template": "ameide-gitops", "exempt": True},
        {"id": "alice-long", "owner": "ALICE", "workspace": "long-*", "idle_after": "8h"},
        {"id": "alice", "owner": "alice", "idleAfter": "30m"},
        {"id": "everyone", "idle_after": "1d"},
    ]})
    p = Policy(H2, parse_exempt("bob/keep-*"), rules)
    assert p.decide("alice", "x", "ameide-gitops").exempt
    d = p.decide("Alice", "LONG-run", "ameide-dev")
    assert (d.exempt, d.idle_after, d.source) == (False, timedelta(hours=8), "rule:alice-long")
    assert p.decide("alice", "short", "ameide-dev").idle_after == timedelta(minutes=30)
    assert p.decide("carol", "w", "t").idle_after == timedelta(days=1)
    # REAP_EXEMPT is never overridden by a rule
    d = p.decide("bob", "keep-me", "ameide-dev")
    assert d.exempt and d.source == "REAP_EXEMPT" and d.idle_after == timedelta(days=1)
    assert not Policy(H2).decide("bob", "keep-me", "t").exempt


def test_exempt_false_rule_keeps_default_idle_and_shadows_later_rules():
    p = Policy(H2, (), parse_rules({"rules": [{"id": "ci", "owner": "ci-*", "exempt": False},
                                              {"id": "rest", "idle_after": "9h"}]}))
    assert p.decide("ci-bot", "w", "t").idle_after == H2
    assert p.decide("dev", "w", "t").idle_after == timedelta(hours=9)


@pytest.mark.parametrize("doc, words", [
    ({"rules": {"owner": "a"}}, ["rules", "list"]),
    ({"rules": ["x"]}, ["rules[0]", "mapping"]),
    ({"rules": [{"id": "a", "owner": "a", "exempt": True}, {"id": "b", "owner": "b", "idle": "2h"}]},
     ['rule "b" (rules[1])', "unknown field(s) idle"]),
    ({"rules": [{"id": "a", "owner": "a", "idle_after": "2 hours"}]}, ['rule "a"', "idle_after"]),
    ({"rules": [{"id": "a", "owner": "a", "idle_after": "1m"}]}, ['rule "a"', "shorter"]),
    ({"rules": [{"id": "a", "owner": "a", "idle_after": True}]}, ['rule "a"', "idle_after"]),
    ({"rules": [{"id": "a", "owner": 3, "exempt": True}]}, ['rule "a"', "owner"]),
    ({"rules": [{"id": "a", "owner": "", "exempt": True}]}, ['rule "a"', "owner", "empty glob"]),
    ({"rules": [{"id": "a", "owner": "a", "exempt": "yes"}]}, ['rule "a"', "exempt"]),
    ({"rules": [{"id": "a", "owner": "a"}]}, ['rule "a"', "idle_after"]),
    ({"rules": [{"id": "a", "owner": "a", "exempt": True, "idle_after": "3h"}]}, ['rule "a"', "contradictory"]),
    ({"rules": [{"id": "a", "idle_after": "3h", "idleAfter": "3h"}]}, ['rule "a"', "both"]),
    ({"rules": [{"owner": "a", "exempt": True}]}, ["rules[0]", "id: required"]),
    ({"rules": [{"id": "Not An Id", "exempt": True}]}, ["rules[0]", "id: expected lowercase"]),
    ({"rules": [{"id": "a", "exempt": True}, {"id": "a", "idle_after": "3h"}]}, ['rule "a" (rules[1])', "unique"]),
    ({"rule": []}, ["unknown", "rule"]),
    (["a"], ["mapping"]),
    ("rules", ["mapping"]),
])
def test_bad_rules_name_the_rule_by_id_and_the_field(doc, words):
    with pytest.raises(ConfigError) as exc:
        parse_rules(doc)
    for w in words:
        assert w in str(exc.value)


def test_every_bad_rule_is_named_by_its_id_in_one_error():
    with pytest.raises(ConfigError) as exc:
        parse_rules({"rules": [
            {"id": "fine", "owner": "x", "exempt": True},
            {"id": "too-eager", "owner": "a", "idle_after": "1m"},
            {"id": "typo", "owner": "b", "exempt": "yes", "colour": "red"},
        ]})
    text = str(exc.value)
    assert "2 of 3 rules are invalid" in text
    assert [p.split(":")[0] for p in exc.value.problems] == ['rule "too-eager" (rules[1])', 'rule "typo" (rules[2])']
    assert "shorter than 5m" in exc.value.problems[0]
    assert "colour" in exc.value.problems[1] and "exempt: expected true or false" in exc.value.problems[1]
    assert "fine" not in text


def test_empty_documents_mean_no_rules():
    assert parse_rules(None) == ()
    assert parse_rules({"rules": None}) == ()
    assert parse_rules({"rules": []}) == ()


def test_load_rules_file(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - id: templates\n    template: ameide-*\n    idle_after: 4h\n")
    assert load_rules(f)[0].idle_after == timedelta(hours=4)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError):
        load_rules(f)


def test_a_bad_rule_in_a_file_is_named_with_the_file():
    with pytest.raises(ConfigError, match=r'REAP_RULES_FILE /r\.yaml: 1 of 1 rule is invalid: rule "x"'):
        parse_rules({"rules": [{"id": "x", "owner": "a"}]}, where="REAP_RULES_FILE /r.yaml")


def test_a_yaml_error_says_what_is_wrong_and_shows_the_line(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - id: a\n    owner: x\n  exempt: true\n")  # `exempt` lost its indentation
    with pytest.raises(ConfigError) as exc:
        load_rules(f)
    text = str(exc.value)
    assert "not valid YAML at line 4, column 3" in text
    assert "expected <block end>" in text  # PyYAML's own words for the problem
    assert "line 4 is '  exempt: true'" in text


def test_exempt_globs():
    assert parse_exempt(" alice/* , */keep-*,") == (("alice", "*"), ("*", "keep-*"))
    assert parse_exempt(None) == () and parse_exempt("") == ()
    for bad in ("alice", "a/b/c", "/x", "x/", " / "):
        with pytest.raises(ConfigError, match="REAP_EXEMPT entry 0"):
            parse_exempt(bad)


CODER = {"coder_url": "http://127.0.0.1:1", "coder_session_token": "abcdef-0123456789"}


def test_the_settings_hold_the_policy_parsed_once(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: night\n    owner: ci-*\n    idleAfter: 30m\n")
    settings = load(ReapSettings, {**CODER, "reap_idle_after": "90m", "reap_exempt": "bob/keep-*",
                                   "reap_rules_file": str(rules)})
    policy = settings.policy()
    assert policy.idle_after == timedelta(minutes=90) and policy.exempt == (("bob", "keep-*"),)
    assert [r.name for r in policy.rules] == ["rule:night"]
    # the settings event shows them as they were given
    public = settings.public_values()
    assert (public["REAP_IDLE_AFTER"], public["REAP_EXEMPT"], public["REAP_RULES_FILE"]) == ("1h30m", "bob/keep-*",
                                                                                            str(rules))
    with pytest.raises(ConfigError, match="REAP_IDLE_AFTER: 2m is shorter than 5m"):
        load(ReapSettings, {**CODER, "reap_idle_after": "2m"})


def test_glob_match():
    assert glob_match("Alice", "alice") and glob_match("a?c", "ABC") and glob_match("[ab]*", "bob")
    assert not glob_match("alice", "alice2")


# -- properties: any input -> a result or ConfigError/ValueError, never another exception --
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
_rule_like = st.builds(
    lambda rid, body: body if rid is None else {"id": rid, **body},
    st.sampled_from([None, "a", "b", "keep-gitops", "Not An Id", 3]),
    st.dictionaries(st.sampled_from(["template", "owner", "workspace", "idle_after", "idleAfter", "exempt", "other"]),
                    st.one_of(_scalars, st.sampled_from(["2h", "90m", "1h30m", "3600", "*", "ameide-*", "0s", "1e9h"])),
                    max_size=5))


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
def test_parse_exempt_accepts_only_trimmed_owner_workspace_pairs_that_round_trip(text):
    try:
        pairs = parse_exempt(text)
    except ConfigError:
        return
    for owner, ws in pairs:
        assert owner and ws and owner == owner.strip() and ws == ws.strip() and "/" not in owner + ws
    assert parse_exempt(",".join(f"{o}/{w}" for o, w in pairs)) == pairs


_NAME = st.text(st.sampled_from("abcXYZ019-_."), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(_NAME, _NAME)
def test_glob_match_is_fnmatch_ignoring_case(name, other):
    assert glob_match(name, name.swapcase()) and glob_match("*", name) and glob_match(name.upper() + "*", name + other)
    assert glob_match(name, other) == (name.lower() == other.lower())  # no wildcard: equality, ignoring case
    assert not glob_match(name + "?", name)


def test_yaml_roundtrip_of_chart_style_rules():
    doc = yaml.safe_load(yaml.safe_dump({"rules": [{"id": "gitops", "template": "ameide-gitops", "idleAfter": "8h"},
                                                   {"id": "bots", "owner": "svc-*", "exempt": True}]}))
    rules = parse_rules(doc)
    assert rules[0].idle_after == timedelta(hours=8) and rules[1].exempt and rules[1].name == "rule:bots"
