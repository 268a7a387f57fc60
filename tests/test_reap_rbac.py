"""The reaper's Role in the workspace namespace, for its orphaned credentials Secrets: list (and,
with reap.deleteOrphans, delete) on secrets, and nothing more. Rendered with the real Helm engine."""

from __future__ import annotations

import pytest

from tests.chart_helpers import RELEASE, deep_merge, env_values, rendered

WS_NS = "coder-workspaces"


def _role(delete_orphans: bool) -> dict:
    values = deep_merge(env_values("dev", enable=True), {"reap": {"deleteOrphans": delete_orphans}})
    return rendered(values).get("Role", f"{RELEASE}-reap")


@pytest.mark.parametrize("delete_orphans", [False, True])
def test_secrets_rule_is_list_and_delete_only_with_delete_orphans(delete_orphans):
    role = _role(delete_orphans)
    assert role["metadata"]["namespace"] == WS_NS
    rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert rules == [{"apiGroups": [""], "resources": ["secrets"],
                      "verbs": ["list", "delete"] if delete_orphans else ["list"]}]


def test_nothing_else_changed_for_secrets():
    """No get/watch/update on secrets (list is enough for metadata), no other new rules."""
    for delete_orphans in (False, True):
        role = _role(delete_orphans)
        resources = sorted(res for r in role["rules"] for res in r["resources"])
        assert resources == ["deployments", "pods", "resourcequotas", "secrets"]
        for rule in role["rules"]:
            if rule["resources"] == ["secrets"]:
                assert not {"get", "watch", "update", "patch", "create", "deletecollection"} & set(rule["verbs"])
