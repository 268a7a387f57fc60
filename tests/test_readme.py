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
