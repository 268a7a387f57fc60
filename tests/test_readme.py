"""README promises that tests can hold it to."""

from __future__ import annotations

import re

from jobs.settings import known_env_vars
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_readme_documents_every_setting():
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, re.M))
    assert known_env_vars() - documented == set()


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./dev demo", "./dev test"]
    assert "./dev test" in (REPO / ".ci" / "run").read_text()


def test_the_readme_rules_example_is_a_valid_rules_file(tmp_path):
    from jobs.reap_rules import load_rules

    example = re.search(r"```yaml\n(rules:.*?)```", README, re.S).group(1)
    (tmp_path / "rules.yaml").write_text(example)
    assert [r.name for r in load_rules(tmp_path / "rules.yaml")] == ["rule:gitops", "rule:service-accounts"]


def test_the_source_secret_key_rule_is_documented_in_both_readmes_as_the_job_applies_it():
    import pytest

    from jobs.errors import ConfigError
    from jobs.sync_external_auth import SOURCE_KEY, source_value

    chart_readme = (REPO / "chart" / "README.md").read_text()
    for text in (" ".join(README.split()), " ".join(chart_readme.split())):  # as read, line breaks aside
        assert f"under the key `{SOURCE_KEY}`" in text and "when it is the Secret's only key" in text
        assert "one trailing newline" in text.lower()
    # What the sentences say, applied by the job:
    assert source_value("s", {SOURCE_KEY: b"Iv1.abc\n", "other": b"x"}) == "Iv1.abc"  # `value` wins
    assert source_value("s", {"client-id": b"Iv1.abc\r\n"}) == "Iv1.abc"  # the only key, one newline trimmed
    for data in ({"a": b"x", "b": b"y"}, {SOURCE_KEY: b"x\n\n"}, {SOURCE_KEY: b" x"}, {SOURCE_KEY: b"\n"}):
        with pytest.raises(ConfigError):
            source_value("s", data)
    # The README's example command makes a Secret the job reads.
    literal = re.search(r"create secret generic \S+ --from-literal=value=(\S+)`", README).group(1)
    assert source_value("s", {SOURCE_KEY: literal.encode()}) == literal
