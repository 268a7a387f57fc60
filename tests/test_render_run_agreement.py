"""One set of rules, checked at render and at run (issue 20): for generated values, the chart
refuses to render exactly when the job it configures would exit 2 on them, and its message names
the value. The judge on the job's side is the job's own settings loader (jobs/settings.py, which
runs jobs/reap_rules.py); nothing here restates a rule.

The values are generated in the chart's spelling (lowercase durations without spaces, non-empty
names): the jobs also accept `2H` or ` 2h `, which the schema does not - the chart is allowed to be
stricter in spelling, never looser in substance. Each example costs a Helm render (~0.3 s), hence
the modest example counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import settings as settings_mod
from jobs.errors import ConfigError
from tests.chart_helpers import DIGEST, RELEASE, deep_merge, env_of, render, rendered
from tests.conftest import CANARY_PASSWORD

BASE = {"enabled": True, "environment": "dev", "image": {"digest": DIGEST}, "networkPolicy": {"enabled": False}}
CODER = {"coder_url": "http://127.0.0.1:1", "coder_session_token": "abcdef-0123456789"}
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Durations around every edge the reaper has: the 5m floor, zero, ten years, fractions, ms.
DURATIONS = st.one_of(
    st.from_regex(r"\A([0-9]{1,3}(\.[0-9]{1,2})?(ms|s|m|h|d|w)){1,3}\Z"),
    st.from_regex(r"\A[0-9]{1,9}(\.[0-9]{1,2})?\Z"),
    st.sampled_from(["1m", "4m59s", "4m59.99s", "299.99", "300", "5m", "4.99m", "0s", "0.5h", "300000ms",
                     "299999ms", "521w", "522w", "3650d", "3651d"]),
)
GLOBS = st.sampled_from(["alice", "*", "team-*", " ", "x" * 257])
RULE = st.fixed_dictionaries(
    {"id": st.sampled_from(["keep-gitops", "alice", "night"])},
    optional={"idleAfter": DURATIONS, "exempt": st.booleans(), "owner": GLOBS, "template": GLOBS},
)


def job_refuses(cls: type[settings_mod.JobSettings], overrides: dict[str, Any]) -> str | None:
    try:
        settings_mod.load(cls, overrides)
    except ConfigError as exc:
        return f"{exc}: {exc.problems}"
    return None


def chart_refuses(values: dict[str, Any]) -> str | None:
    try:
        render(values)
    except helm.HelmError as exc:
        return str(exc)
    return None


@EXAMPLES
@given(idle_after=DURATIONS, rules=st.lists(RULE, max_size=3))
def test_the_reaper_values_render_exactly_when_the_reaper_accepts_them(idle_after, rules, tmp_path_factory) -> None:
    values = deep_merge(BASE, {"reap": {"idleAfter": idle_after, "rules": rules}})
    rules_file = Path(tmp_path_factory.mktemp("rules")) / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"rules": rules}))
    job = job_refuses(settings_mod.ReapSettings,
                      {**CODER, "reap_idle_after": idle_after, "reap_rules_file": str(rules_file) if rules else None})
    chart = chart_refuses(values)
    assert (chart is None) == (job is None), f"chart: {chart}\njob: {job}"
    if chart is None:
        env = env_of(rendered(values).get("CronJob", f"{RELEASE}-reaper"))
        assert env["REAP_IDLE_AFTER"]["value"] == idle_after  # what the job was judged on is what it gets
    else:
        bad_default = job_refuses(settings_mod.ReapSettings, {**CODER, "reap_idle_after": idle_after})
        if bad_default:
            assert 'reap.idleAfter "' in chart or "/reap/idleAfter" in chart
        else:
            assert "reap.rules[" in chart or "/reap/rules/" in chart


NAMES = st.one_of(st.text(alphabet="ab0-.Z_", min_size=1, max_size=12), st.just("x" * 254))
PROVIDER_IDS = st.one_of(st.text(alphabet="aZ0-", min_size=1, max_size=34), st.sampled_from(["new", "create", "New"]))


@EXAMPLES
@given(target=NAMES, client_id=NAMES, provider=PROVIDER_IDS)
def test_the_external_auth_values_render_exactly_when_the_job_accepts_them(target, client_id, provider) -> None:
    values = deep_merge(BASE, {"syncExternalAuth": {"targetSecret": target, "clientIdSecret": client_id,
                                                    "id": provider}})
    job = job_refuses(settings_mod.ExternalAuthSettings, {"external_auth_target_secret": target,
                                                          "external_auth_client_id_secret": client_id,
                                                          "external_auth_id": provider})
    chart = chart_refuses(values)
    assert (chart is None) == (job is None), f"chart: {chart}\njob: {job}"
    if chart is not None:
        named = {"/syncExternalAuth/targetSecret": "EXTERNAL_AUTH_TARGET_SECRET",
                 "/syncExternalAuth/clientIdSecret": "EXTERNAL_AUTH_CLIENT_ID_SECRET",
                 "/syncExternalAuth/id": "EXTERNAL_AUTH_ID"}
        assert {path for path, var in named.items() if path in chart} == \
               {path for path, var in named.items() if var in str(job)}


ORGANIZATIONS = st.one_of(st.text(alphabet="aZ0-\x1f /", min_size=1, max_size=34),
                         st.sampled_from(["default", "new", "0b6f3a52-6f0e-4cc4-9e0e-2d1c8e3f8a01", "0b6f3a52"]))


@EXAMPLES
@given(organization=ORGANIZATIONS)
def test_the_organization_renders_exactly_when_the_jobs_accept_it(organization) -> None:
    # It becomes a URL path segment: a control character once crashed the job inside httpx.
    job = job_refuses(settings_mod.DoctorSettings, {**CODER, "coder_organization": organization,
                                                    "templates_dir": "chart/files/coder-templates"})
    chart = chart_refuses(deep_merge(BASE, {"coder": {"organization": organization}}))
    assert (chart is None) == (job is None), f"chart: {chart}\njob: {job}"
    if chart is not None:
        assert "/coder/organization" in chart and "CODER_ORGANIZATION" in str(job)


@pytest.mark.parametrize("values, says", [
    ({"reap": {"idleAfter": "1m"}}, 'reap.idleAfter "1m": shorter than 5m'),
    ({"reap": {"rules": [{"id": "a", "exempt": True}, {"id": "a", "idleAfter": "8h"}]}},
     'reap.rules[1] (id "a"): id is also the id of reap.rules[0]'),
    ({"reap": {"rules": [{"id": "night", "idleAfter": "1m"}]}}, 'reap.rules[0] (id "night"): idleAfter "1m": shorter'),
])
def test_what_the_issue_found_installing_is_refused_at_render(values, says) -> None:
    with pytest.raises(helm.HelmError) as exc:
        render(deep_merge(BASE, values))
    assert says in str(exc.value)


def test_every_problem_is_in_one_message() -> None:
    with pytest.raises(helm.HelmError) as exc:
        render(deep_merge(BASE, {"reap": {"idleAfter": "1m", "rules": [{"id": "a", "exempt": True},
                                                                         {"id": "a", "idleAfter": "1m"}]}}))
    assert "3 invalid value(s)" in str(exc.value)


def test_a_disabled_reaper_is_not_judged() -> None:
    assert chart_refuses(deep_merge(BASE, {"reap": {"enabled": False, "idleAfter": "1m"}})) is None


@pytest.mark.parametrize("url", [f"http://admin:{CANARY_PASSWORD}@coder.coder.svc", "coder.coder.svc",
                                 "http://coder?x=1", "ftp://coder"])
def test_a_coder_url_the_jobs_refuse_is_refused_at_render_without_repeating_it(url) -> None:
    """A schema error quotes the value; a password in the URL would end up in Argo CD's status."""
    assert job_refuses(settings_mod.CoderSettings, {**CODER, "coder_url": url})
    chart = chart_refuses(deep_merge(BASE, {"coder": {"url": url}}))
    assert chart is not None and "coder.url: " in chart
    assert CANARY_PASSWORD not in chart and "admin:" not in chart


@pytest.mark.parametrize("url", ["http://coder.coder.svc.cluster.local", "https://coder.example.org:8443/",
                                 "http://127.0.0.1:3000/coder"])
def test_a_coder_url_the_jobs_accept_renders(url) -> None:
    assert job_refuses(settings_mod.CoderSettings, {**CODER, "coder_url": url}) is None
    assert chart_refuses(deep_merge(BASE, {"coder": {"url": url}})) is None
