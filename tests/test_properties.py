"""Property tests (hypothesis): every parser of user input ends in a result or a ConfigError
(exit 2), never another exception, and the CLI never ends in a traceback.

tests/test_reap_rules.py already checks the parsers on short random text and
tests/test_settings.py the environment; these go further with YAML that a person could
actually write (dates, anchors, tags, deep nesting, odd scalars) and with the properties
the parsers promise (round trips, REAP_EXEMPT cannot be overridden, one value per Secret).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobs import settings as settings_mod
from jobs.archive import SETTINGS_FILE
from jobs.durations import format_duration, parse_duration
from jobs.errors import ConfigError
from jobs.reap_rules import MIN_IDLE_AFTER, Policy, load_rules, parse_exempt, parse_idle_after
from jobs.sync_external_auth import SourcesMissing, source_value
from jobs.template_source import TemplateSettings, load_settings
from tests.conftest import TEMPLATES_DIR, job_env
from tests.job_process import launcher

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TEN_YEARS = 10 * 365 * 86400

# ---------------------------------------------------------------------------- YAML a person could write

_tricky_scalars = st.sampled_from([
    "2h", "90m", "1h30m", "3600s", "0", "-1", "1e999", ".nan", ".inf", "-.inf", "~", "null", "yes", "no", "on", "off",
    "true", "False", "0x1F", "0o17", "1_000", "2001-12-14", "2001-13-01", "2001-02-30", "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 25:61:61", "'quoted'", '"a\\x41"', '"\\ud800"', "!!binary aGVsbG8=", "!!binary ^^^", "!!timestamp x",
    "!!int x", "!!float x", "!!bool maybe", "!!set {a, b}", "!!omap [a: 1]", "!!python/object:os.system x",
    "!!str 12", "&a 1", "*a", "*undefined", "<<", "|\n  text", ">-\n  folded", "", "-", "?", ":", "[", "]", "{", "}",
    "#comment", "%YAML 1.1", "---", "...", "@", "`", "\t", "ameide-*", "svc-*", "[!a-z]*", "true\n", "12:30:00",
])
_words = st.sampled_from(["rules", "template", "owner", "workspace", "idle_after", "idleAfter", "exempt", "display_name",
                          "description", "icon", "default_ttl_ms", "activity_bump_ms", "allow_user_cancel_workspace_jobs",
                          "variables", "namespace", "x", "<<", "? x", "!!str k", "1", "~"])
_leaf = st.one_of(_tricky_scalars, st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                  st.integers(-10**30, 10**30).map(str), st.floats().map(repr))


def _block(children: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    """Lines of a block mapping or sequence whose values are nested blocks or scalars."""
    def indent(lines: list[str]) -> list[str]:
        return ["  " + line for line in lines]

    entry = st.one_of(
        st.tuples(_words, _leaf).map(lambda kv: [f"{kv[0]}: {kv[1]}"]),
        st.tuples(_words, children).map(lambda kv: [f"{kv[0]}:"] + indent(kv[1])),
        _leaf.map(lambda v: [f"- {v}"]),
        children.map(lambda c: ["-"] + indent(c)),
        st.tuples(_words, st.lists(_leaf, max_size=4)).map(lambda kv: [f"{kv[0]}: [{', '.join(kv[1])}]"]),
        st.tuples(_words, _leaf).map(lambda kv: [f"{{{kv[0]}: {kv[1]}}}"]),
    )
    return st.lists(entry, min_size=1, max_size=4).map(lambda es: [line for e in es for line in e])


_blocks = st.recursive(_leaf.map(lambda v: [v]), _block, max_leaves=12)
yaml_text = st.one_of(
    _blocks.map("\n".join),
    st.tuples(st.sampled_from([2, 40, 1200]), st.sampled_from("[{")).map(lambda nd: nd[1] * nd[0]),  # deep nesting
    st.text(max_size=200),
)
RULE_LIKE = st.one_of(
    yaml_text,
    st.lists(st.tuples(st.sampled_from(["template", "owner", "workspace", "idle_after", "idleAfter", "exempt", "bogus"]),
                       _leaf), max_size=4)
    .map(lambda kvs: "rules:\n  - id: r\n    " + "\n    ".join(f"{k}: {v}" for k, v in kvs) if kvs else "rules: []"),
)


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


# ---------------------------------------------------------------------------- durations


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**7), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4))
def test_a_sum_of_unit_parts_parses_to_its_seconds_or_a_value_error(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    seconds = sum(n * UNITS[u] for n, u in parts)
    try:
        parsed = parse_duration(text)
    except ValueError as exc:
        assert seconds <= 0 or seconds > TEN_YEARS, (text, exc)
        return
    assert 0 < seconds <= TEN_YEARS
    assert abs(parsed.total_seconds() - seconds) < 1e-3


@settings(max_examples=200, deadline=None)
@given(st.integers(1, TEN_YEARS))
def test_format_duration_round_trips_through_parse_duration(seconds):
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(st.sampled_from("0123456789.hmsdw -+_eE١٢٣"), max_size=30), st.text(max_size=30)))
def test_an_idle_after_is_at_least_five_minutes_or_a_config_error(text):
    try:
        delta = parse_idle_after(text, "REAP_IDLE_AFTER")
    except ConfigError as exc:
        assert exc.exit_code == 2 and "REAP_IDLE_AFTER" in str(exc)
        return
    assert MIN_IDLE_AFTER <= delta <= timedelta(seconds=TEN_YEARS)


# ---------------------------------------------------------------------------- globs, REAP_EXEMPT, rules


_glob = st.text(st.sampled_from("ab-*?[]!^\\/. "), min_size=0, max_size=8)
_name = st.text(st.sampled_from("ab-.[]*?"), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_glob, _glob), max_size=4).map(lambda ps: ",".join(f"{o}/{w}" for o, w in ps)),
       st.text(st.sampled_from("ab/,*"), max_size=6), _name, _name, _name)
def test_reap_exempt_parses_or_is_a_config_error_and_can_never_be_overridden_by_a_rule(exempt, noise, owner, ws, tpl):
    try:
        pairs = parse_exempt(exempt + noise)
    except ConfigError as exc:
        assert exc.exit_code == 2 and "REAP_EXEMPT" in str(exc)
        return
    from jobs.reap_rules import Rule, glob_match

    rules = (Rule(id="a", owner="*", exempt=False), Rule(id="b", idle_after=timedelta(hours=9)))
    listed = any(glob_match(o, owner) and glob_match(w, ws) for o, w in pairs)
    decision = Policy(timedelta(hours=2), pairs, rules).decide(owner, ws, tpl)
    assert decision.exempt == listed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(RULE_LIKE)
@example("rules:\n  - owner: a\n    idle_after: 2001-13-01")  # a date PyYAML cannot construct
@example("[" * 3000)  # deeper than PyYAML's recursive constructor goes
def test_any_rules_file_loads_or_is_a_config_error(tmp_path, text):
    path = _write(tmp_path, "rules.yaml", text)
    try:
        rules = load_rules(path)
    except ConfigError as exc:
        assert exc.exit_code == 2 and str(exc).startswith("REAP_RULES_FILE")
        return
    policy = Policy(timedelta(hours=2), (), rules)
    assert policy.decide("alice", "ws", "ameide-dev").idle_after >= MIN_IDLE_AFTER


def test_a_rules_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"rules:\n  - owner: \xff\xfe\n    exempt: true\n")
    with pytest.raises(ConfigError):
        load_rules(path)


# ---------------------------------------------------------------------------- the template settings file


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(yaml_text)
@example("display_name: 2001-02-30")
@example("variables:\n  namespace: !!binary ^^^")
@example("{" * 3000)
def test_any_template_settings_file_loads_or_is_a_config_error_naming_the_template(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("tpl")
    _write(folder, SETTINGS_FILE, text)
    try:
        loaded = load_settings(folder, "ameide-dev")
    except ConfigError as exc:
        assert exc.exit_code == 2 and "ameide-dev" in str(exc) and SETTINGS_FILE in str(exc)
        return
    assert isinstance(loaded, TemplateSettings)
    loaded.meta(), loaded.variable_values(), loaded.variables_fingerprint()  # usable as loaded


def test_the_shipped_template_settings_files_load():
    for folder in sorted(p for p in TEMPLATES_DIR.iterdir() if p.is_dir()):
        assert load_settings(folder, folder.name).default_ttl_ms > 0


# ---------------------------------------------------------------------------- source Secrets


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.none(), st.dictionaries(st.sampled_from(["value", "client-id", "x", ""]),
                                            st.one_of(st.binary(max_size=12),
                                                      st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass"))),
                                            max_size=3)))
def test_a_source_secret_yields_one_clean_value_or_a_config_error_naming_it(data):
    """...or, for a Secret that does not exist, SourcesMissing (waited for, exit 1 past the wait)."""
    try:
        value = source_value("coder/src", data)
    except SourcesMissing as exc:
        assert data is None and exc.exit_code == 1 and exc.names == ["coder/src"]
        return
    except ConfigError as exc:
        assert exc.exit_code == 2 and "coder/src" in str(exc)
        return
    assert value and value == value.strip() and "\n" not in value and "\r" not in value
    key = "value" if "value" in data else next(iter(data))
    assert data[key].decode("utf-8") in (value, value + "\n", value + "\r\n")


# ---------------------------------------------------------------------------- settings from flags


_flag_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(settings_mod.ALL_SETTINGS).flatmap(
    lambda cls: st.tuples(st.just(cls), st.dictionaries(st.sampled_from(sorted(cls.model_fields)), _flag_text, max_size=6))))
def test_any_flag_values_end_in_settings_or_a_config_error(cls_and_flags):
    """Flags go through `load(cls, overrides)`, not the environment (test_settings covers that path)."""
    cls, flags = cls_and_flags
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("CODER_", "TEMPLATE", "REAP_", "EXTERNAL_AUTH"))}
    try:
        settings_mod.load(cls, flags)
    except ConfigError as exc:
        assert exc.exit_code == 2 and str(exc)
    finally:
        os.environ.update(saved)


# ---------------------------------------------------------------------------- the CLI as a process


CLI_JOBS = ("bootstrap-admin", "republish-templates", "recover", "doctor", "reap", "sync-external-auth")
RANDOM_ENV = ("CODER_ADMIN_USERNAME", "CODER_ADMIN_EMAIL", "CODER_ADMIN_PASSWORD", "CODER_ADMIN_NAME", "CODER_ORGANIZATION",
              "CODER_SESSION_TOKEN", "CODER_SETUP_TOKEN", "TEMPLATES", "TEMPLATES_REVISION", "REAP_IDLE_AFTER",
              "REAP_MAX_STOPS", "REAP_EXEMPT", "REAP_MAX_WORKSPACES_PER_USER", "REAP_MAX_RUNNING_PER_USER",
              "REAP_QUOTA_ACTION", "REAP_CONCURRENCY", "REAP_PAGE_SIZE", "REAP_RULES_FILE", "REAP_WORKSPACE_NAMESPACE",
              "POD_NAMESPACE", "EXTERNAL_AUTH_ID", "EXTERNAL_AUTH_TARGET_SECRET", "EXTERNAL_AUTH_CLIENT_ID_SECRET",
              "CODER_DEPLOYMENT", "CODER_JOBS_LOG_FORMAT")
_env_value = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20),
    st.sampled_from(["", " ", "0", "-1", "1", "2h", "1ms", "stop", "report", "*/*", "a/b,c", "ameide-dev", "nope",
                     "coder", "platform-admin", "x@y.z", "Sup3r-Secret-Pw!", "/nonexistent", "json", "console"]),
)


@pytest.fixture(scope="module")
def live_fakes(tmp_path_factory, kube_cluster):
    """A coderd fake and the real Kubernetes API server that stay up for every example (state
    accumulates: fine)."""
    from fakes.coderd import FakeCoderd

    coderd = FakeCoderd(external_auth_providers=("github",)).start()
    kube_cluster.reset()
    kubeconfig = kube_cluster.kubeconfig(tmp_path_factory.mktemp("kube") / "config", namespace="coder")
    yield coderd, kubeconfig
    coderd.stop()


@pytest.mark.no_conformance  # random credentials are off-spec requests by design (e.g. an email that is not one)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(job=st.sampled_from(CLI_JOBS), env=st.dictionaries(st.sampled_from(RANDOM_ENV), _env_value, max_size=8),
       dry_run=st.booleans())
def test_the_cli_with_random_environment_exits_with_a_documented_code_and_never_prints_a_traceback(live_fakes, job, env, dry_run):
    coderd, kubeconfig = live_fakes
    # Every wait is short: sync-external-auth without source Secrets waits EXTERNAL_AUTH_SOURCE_TIMEOUT
    # (default 300 s) for External Secrets to deliver them, longer than the run is given here.
    full = {"CODER_URL": coderd.url, "CODER_READY_TIMEOUT": "2", "CODER_REQUEST_TIMEOUT": "5",
            "EXTERNAL_AUTH_SOURCE_TIMEOUT": "2",
            "TEMPLATES_DIR": str(TEMPLATES_DIR), "TEMPLATE_BUILD_TIMEOUT": "10", "KUBECONFIG": kubeconfig,
            "CODER_ADMIN_USERNAME": "platform-admin", "CODER_ADMIN_EMAIL": "platform-admin@ameide.io",
            "CODER_ADMIN_PASSWORD": "Prop-Test-Pw-9q!", **env}
    rc, out, err = launcher().run([*(["--dry-run"] if dry_run else []), job], job_env(full), timeout=60)
    output = out + err
    assert rc in ((0, 1, 2, 3) if job == "doctor" else (0, 1, 2)), output  # doctor: 3 is "could not check"
    assert "Traceback" not in output, output
