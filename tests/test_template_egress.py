"""One egress story: what a workspace downloads at start is what its environment lets it reach.

For every values file, rendered with the real Helm engine (with `enabled: true`), the hosts the
workspace fetches from when it starts - the URLs in our start scripts (as that environment's
template variables render them, Codex scripts only where Codex is on), where those downloads
redirect to, the Coder access URL (the agent binary), the repository envbuilder clones and the
registry of the fallback image - must each be allowed by that environment's workspace egress
policy: a `toFQDNs` entry of the CiliumNetworkPolicy, or the host list in the comment of a plain
NetworkPolicy CIDR rule. What is not allowed is not downloaded at start but expected in the
devcontainer image (code-server and its extensions, see test_coder_templates), and package
registries are allowed nowhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.chart_helpers import CHART_DIR, RELEASE, deep_merge, env_values, load_values, parse, render_raw
from tests.test_coder_templates import _root
from tests.test_template_scripts import render_scripts
from tests.test_template_variables import sent, settings_from_render

TEMPLATES = ("ameide-dev", "ameide-gitops")
VALUES_FILES = ("values.yaml", "values-local.yaml", "values-dev.yaml", "values-staging.yaml", "values-production.yaml")

# Where a download is redirected to. GitHub release assets are served from these hosts; MCR
# serves image layers from regional <region>.data.mcr.microsoft.com hosts.
REDIRECTS = {
    "github.com": ["objects.githubusercontent.com", "release-assets.githubusercontent.com"],
    "mcr.microsoft.com": ["westeurope.data.mcr.microsoft.com"],
}
# In-cluster names that are not FQDN rules but rules of their own.
IN_CLUSTER = {"kubernetes.default.svc": "kubernetesApi"}
# Hosts the templates deliberately do not download from at start (expected in the image).
EXPECTED_IN_IMAGE = {"code-server.dev": "code-server", "open-vsx.org": "code-server extensions (openai.chatgpt)"}
# Package registries: a workspace that reaches one can pull and push anything.
REGISTRIES = ["registry.npmjs.org", "registry.yarnpkg.com", "pypi.org", "files.pythonhosted.org",
              "open-vsx.org", "marketplace.visualstudio.com", "proxy.golang.org", "crates.io", "rubygems.org"]


def _values(file: str) -> dict[str, Any]:
    """An environment file with the one flip `enabled: true` (and the digest a release writes);
    the chart defaults as they are (enabled there, they fail the render on purpose: no Kubernetes
    API CIDRs)."""
    if file == "values.yaml":
        import yaml

        return yaml.safe_load((CHART_DIR / file).read_text()) or {}
    return env_values(file.removeprefix("values-").removesuffix(".yaml"), enable=True)


@dataclass
class Policy:
    """A rendered workspace egress allowlist."""

    kind: str  # "cilium", "networkpolicy" or "none"
    patterns: list[str] = field(default_factory=list)  # host names / patterns
    rules: set[str] = field(default_factory=set)  # names of the non-FQDN rules present (dns, coderd, kubernetesApi)

    def allows(self, host: str) -> bool:
        if self.kind == "none":
            return True
        if host in IN_CLUSTER:
            return IN_CLUSTER[host] in self.rules
        return any(_match(p, host) for p in self.patterns)


def _match(pattern: str, host: str) -> bool:
    # Cilium: "*" alone matches every name; elsewhere it matches DNS characters within one label.
    if pattern == "*":
        return True
    regex = "".join("[-a-z0-9_]*" if ch == "*" else re.escape(ch) for ch in pattern.lower())
    return re.fullmatch(regex, host.lower()) is not None


def workspace_policy(manifests: dict[str, str]) -> Policy:
    objects = parse(manifests)
    name = f"{RELEASE}-workspaces-egress"
    cilium = [o for o in objects if o["kind"] == "CiliumNetworkPolicy" and o["metadata"]["name"] == name]
    if cilium:
        policy = Policy("cilium")
        for rule in cilium[0]["spec"]["egress"]:
            for fqdn in rule.get("toFQDNs", []):
                policy.patterns.append(fqdn.get("matchName") or fqdn["matchPattern"])
            if "kube-apiserver" in rule.get("toEntities", []):
                policy.rules.add("kubernetesApi")
        return policy
    text = manifests.get("coder-jobs/templates/workspaces/networkpolicy.yaml", "")
    plain = [doc for doc in text.split("\n---") if f"name: {name}\n" in doc and "kind: NetworkPolicy" in doc]
    if not plain:
        return Policy("none")
    policy = Policy("networkpolicy")
    for key, hosts in re.findall(r"^    # (.+?)(?: - hosts: (.+))?$", plain[0], flags=re.M):
        policy.rules.add(key)
        policy.patterns += [h.strip() for h in hosts.split(",") if h.strip()]
    return policy


@dataclass(frozen=True)
class Download:
    host: str
    why: str


def downloads_at_start(file: str, objects: list[dict[str, Any]], values: dict[str, Any], tmp_path: Path) -> list[Download]:
    out: list[Download] = []
    access = (values.get("coder") or {}).get("accessUrl") or ""
    if access:
        out.append(Download(urlsplit(access).hostname, "the Coder agent binary (init script, from the access URL)"))
    for template in TEMPLATES:
        variables = sent(settings_from_render(objects, template, tmp_path / file / template))
        codex = variables.get("codex_enabled") == "true"
        defaults = {n: b.get("default") for n, b in _root(template).variables.items()}
        out.append(Download(urlsplit(defaults["repo_url"]).hostname, f"{template}: envbuilder clones the repository"))
        fallback = defaults["fallback_image"]
        if fallback:
            out.append(Download(fallback.split("/")[0], f"{template}: envbuilder pulls the fallback image"))
        for script in render_scripts(template, codex_enabled=codex).values():
            if script.counted and not codex:
                continue  # the Codex scripts exist only with codex_enabled (test_coder_templates)
            for url in re.findall(r"https?://[^\s\"'$)]+", script.text):
                host = urlsplit(url).hostname
                out.append(Download(host, f"{template}: script {script.name}"))
                for target in REDIRECTS.get(host, []):
                    out.append(Download(target, f"{template}: script {script.name} (redirect of {host})"))
    return out


@pytest.mark.parametrize("file", VALUES_FILES)
def test_every_host_downloaded_at_start_is_allowed_by_that_environments_egress_policy(file, tmp_path):
    values = _values(file)
    manifests = render_raw(values)
    objects = parse(manifests)
    policy = workspace_policy(manifests)
    if policy.kind == "none":
        # Local and the chart defaults render no workspace egress policy: nothing is blocked there,
        # either because workspaces are off or because their egress policy is switched off.
        ws = values.get("workspaces") or {}
        assert not ws.get("enabled") or (ws.get("networkPolicy") or {}).get("enabled") is False, \
            f"{file}: workspaces on but no egress policy"
        return
    blocked = [f"{d.host} ({d.why})" for d in downloads_at_start(file, objects, values, tmp_path)
               if not policy.allows(d.host)]
    assert not blocked, f"{file} ({policy.kind}) blocks what the templates download at start: {blocked}"


@pytest.mark.parametrize("file", VALUES_FILES)
def test_no_package_registry_and_nothing_expected_in_the_image_is_allowed(file):
    policy = workspace_policy(render_raw(_values(file)))
    if policy.kind == "none":
        pytest.skip(f"{file}: no workspace egress policy rendered (workspaces or their egress policy disabled)")
    for host in [*REGISTRIES, *EXPECTED_IN_IMAGE]:
        assert not policy.allows(host), f"{file}: {host} is allowed"


def test_the_same_story_holds_with_plain_networkpolicies(tmp_path):
    """dev switched to the kubernetes provider: each CIDR rule's comment names its hosts."""
    values = deep_merge(_values("values-dev.yaml"), {
        "networkPolicy": {"provider": "kubernetes", "kubernetesApi": {"cidrs": ["10.0.0.1/32"]}},
        "workspaces": {"networkPolicy": {
            "provider": "kubernetes",
            "coderAccessUrl": {"cidrs": ["20.1.2.3/32"]},
            "keycloak": {"cidrs": ["20.1.2.4/32"]},
            "openai": {"cidrs": ["162.159.140.245/32"]},
            "extra": [{**load_values("dev")["workspaces"]["networkPolicy"]["extra"][0], "cidrs": ["13.107.246.0/24"]}],
        }},
    })
    manifests = render_raw(values)
    policy = workspace_policy(manifests)
    assert policy.kind == "networkpolicy"
    assert "# github - hosts: github.com, *.github.com, *.githubusercontent.com, ghcr.io, *.ghcr.io" in \
        manifests["coder-jobs/templates/workspaces/networkpolicy.yaml"]
    for d in downloads_at_start("plain", parse(manifests), values, tmp_path):
        assert policy.allows(d.host), d


def test_a_host_missing_from_the_allowlist_is_caught(tmp_path):
    """The check has teeth: drop GitHub's asset hosts and the Codex CLI download is blocked."""
    values = deep_merge(_values("values-dev.yaml"), {"workspaces": {"networkPolicy": {"github": {
        "fqdns": ["github.com", "*.github.com", "ghcr.io", "*.ghcr.io"]}}}})
    manifests = render_raw(values)
    policy = workspace_policy(manifests)
    hosts = {d.host for d in downloads_at_start("dev", parse(manifests), values, tmp_path) if not policy.allows(d.host)}
    assert hosts == {"objects.githubusercontent.com", "release-assets.githubusercontent.com"}
