# The Coder agent and everything that runs inside the workspace container:
# kubectl namespace context, code-server (Coder's registry module, same container,
# no sidecar), a check of the tools the devcontainer image must ship, and the
# best-effort Codex tooling. No script here blocks login or readiness.
#
# Egress (chart/README.md, "One egress story"): workspaces reach only DNS, coderd,
# the Coder access URL, Keycloak, GitHub, OpenAI (with Codex) and the Kubernetes
# API. So nothing here downloads at start from anywhere else: code-server and the
# openai.chatgpt extension are expected in the devcontainer image, and the one
# download (the Codex CLI when the image lacks it) comes from GitHub releases.
# tests/test_template_scripts.py runs every script below and cross-checks the
# hosts against each environment's allowlist.

resource "coder_agent" "main" {
  arch = data.coder_provisioner.me.arch
  os   = "linux"
  dir  = local.workspace_folder

  env = {
    # The per-user home; every session, script and app the agent starts uses it.
    HOME                = local.home_dir
    WORKSPACE_NAMESPACE = var.namespace
    AMEIDE_ENVIRONMENT  = var.environment
    GIT_AUTHOR_NAME     = coalesce(data.coder_workspace_owner.me.full_name, data.coder_workspace_owner.me.name)
    GIT_AUTHOR_EMAIL    = data.coder_workspace_owner.me.email
    GIT_COMMITTER_NAME  = coalesce(data.coder_workspace_owner.me.full_name, data.coder_workspace_owner.me.name)
    GIT_COMMITTER_EMAIL = data.coder_workspace_owner.me.email
  }

  metadata {
    display_name = "CPU Usage"
    key          = "0_cpu_usage"
    script       = "coder stat cpu"
    interval     = 10
    timeout      = 1
  }

  metadata {
    display_name = "RAM Usage"
    key          = "1_ram_usage"
    script       = "coder stat mem"
    interval     = 10
    timeout      = 1
  }

  metadata {
    display_name = "Workspaces Disk"
    key          = "2_workspaces_disk"
    script       = "coder stat disk --path /workspaces"
    interval     = 60
    timeout      = 1
  }
}

# kubectl defaults to the workspace namespace, using the pod's own (in-cluster)
# service account token.
resource "coder_script" "kube_context" {
  agent_id           = coder_agent.main.id
  display_name       = "kubectl context"
  icon               = "/icon/k8s.png"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -uo pipefail
    ns="${var.namespace}"
    sa=/var/run/secrets/kubernetes.io/serviceaccount
    if [ ! -s "$HOME/.kube/config" ] && [ -r "$sa/token" ]; then
      mkdir -p "$HOME/.kube"
      umask 077
      cat > "$HOME/.kube/config" <<KUBECONFIG
    apiVersion: v1
    kind: Config
    clusters:
      - name: in-cluster
        cluster:
          server: https://kubernetes.default.svc
          certificate-authority: $sa/ca.crt
    users:
      - name: workspace
        user:
          tokenFile: $sa/token
    contexts:
      - name: workspace
        context:
          cluster: in-cluster
          user: workspace
          namespace: $ns
    current-context: workspace
    KUBECONFIG
    fi
    if command -v kubectl >/dev/null 2>&1; then
      kubectl config set-context --current --namespace="$ns" >/dev/null 2>&1 || true
    fi
    echo "kubectl context namespace: $ns"
    exit 0
  EOT
}

# code-server through Coder's registry module (a reference, pinned; never copied
# here). use_cached / use_cached_extensions make it run what the image ships and
# download nothing: its installer (code-server.dev) and extension gallery
# (open-vsx.org) are not in the egress allowlist. If either is missing from the
# image, the module's own download fails; image_tools below says why, clearly.
module "code-server" {
  count   = data.coder_workspace.me.start_count
  source  = "registry.coder.com/coder/code-server/coder"
  version = "1.5.2"

  agent_id              = coder_agent.main.id
  folder                = local.workspace_folder
  install_prefix        = var.code_server_prefix
  install_version       = var.code_server_version
  use_cached            = true
  extensions            = var.codex_enabled ? ["openai.chatgpt"] : []
  extensions_dir        = var.code_server_extensions_dir
  use_cached_extensions = true
  subdomain             = false
  order                 = 1
}

# What the devcontainer image must provide, checked at start with a message that
# says what to add instead of a download that the egress policy drops.
resource "coder_script" "image_tools" {
  agent_id           = coder_agent.main.id
  display_name       = "Devcontainer image check"
  icon               = "/icon/code.svg"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -uo pipefail
    missing=0
    bin="${var.code_server_prefix}/bin/code-server"
    if [ -x "$bin" ]; then
      echo "code-server: $bin"
    else
      echo "MISSING: code-server is not in the devcontainer image (expected at $bin)."
      echo "  Workspaces do not download it at start: code-server.dev is not in the egress allowlist."
      echo "  Install it in .devcontainer/coder (e.g. the code-server .deb) or set code_server_prefix."
      missing=1
    fi
    if [ "${var.codex_enabled}" = true ] && [ -x "$bin" ]; then
      if "$bin" --extensions-dir "${var.code_server_extensions_dir}" --list-extensions 2>/dev/null | grep -qx 'openai.chatgpt'; then
        echo "openai.chatgpt: installed in ${var.code_server_extensions_dir}"
      else
        echo "MISSING: the openai.chatgpt extension is not in ${var.code_server_extensions_dir}."
        echo "  Workspaces do not download it at start: open-vsx.org is not in the egress allowlist."
        echo "  Install it at image build: code-server --extensions-dir ${var.code_server_extensions_dir} --install-extension openai.chatgpt"
        missing=1
      fi
    fi
    exit "$missing"
  EOT
}

# Seed Codex auth from the first mounted slot secret, in slot order.
resource "coder_script" "codex_auth" {
  count              = var.codex_enabled ? 1 : 0
  agent_id           = coder_agent.main.id
  display_name       = "Codex auth"
  icon               = "/icon/openai.svg"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -uo pipefail
    umask 077
    mkdir -p "$HOME/.codex"
    found=""
    for slot in ${join(" ", local.codex_auth_slots)}; do
      src="${local.codex_auth_mount}/$slot/auth.json"
      if [ -s "$src" ]; then
        cp "$src" "$HOME/.codex/auth.json" && chmod 0600 "$HOME/.codex/auth.json" && found="$slot"
        break
      fi
    done
    if [ -n "$found" ]; then
      echo "codex: auth.json seeded from slot $found"
    else
      echo "codex: no auth slot mounted; run 'codex login' to sign in"
    fi
    config="$HOME/.codex/config.toml"
    touch "$config"
    # Top-level TOML keys must precede any [table], so (re)write it first.
    sed -i '/^[[:space:]]*cli_auth_credentials_store[[:space:]]*=/d' "$config" || true
    { echo 'cli_auth_credentials_store = "file"'; cat "$config"; } >"$config.tmp" \
      && mv "$config.tmp" "$config" && chmod 0600 "$config"
    exit 0
  EOT
}

# The Codex CLI: the image's copy when it ships one (preferred: pinned at build
# time), else the pinned GitHub release (github.com is allowed; npm is not, by
# design). Best effort: never fails the workspace.
resource "coder_script" "codex_cli" {
  count              = var.codex_enabled ? 1 : 0
  agent_id           = coder_agent.main.id
  display_name       = "Codex CLI"
  icon               = "/icon/openai.svg"
  run_on_start       = true
  start_blocks_login = false
  script             = <<-EOT
    #!/usr/bin/env bash
    set -uo pipefail
    if command -v codex >/dev/null 2>&1; then
      echo "codex: $(command -v codex) (from the image)"
      exit 0
    fi
    case "$(uname -m)" in
      x86_64 | amd64) triple=x86_64-unknown-linux-musl ;;
      aarch64 | arm64) triple=aarch64-unknown-linux-musl ;;
      *) echo "codex: no release build for $(uname -m); install it in the devcontainer image"; exit 0 ;;
    esac
    url="https://github.com/openai/codex/releases/download/rust-v${var.codex_version}/codex-$triple.tar.gz"
    tmp="$(mktemp -d)"
    mkdir -p "$HOME/.local/bin"
    if curl -fsSL --retry 2 --max-time 300 "$url" | tar -xz -C "$tmp" \
      && install -m 0755 "$tmp/codex-$triple" "$HOME/.local/bin/codex"; then
      echo "codex: ${var.codex_version} installed from $url"
    else
      echo "codex: download of $url failed; continuing without the Codex CLI (ship it in the devcontainer image)"
    fi
    rm -rf "$tmp"
    grep -qs '.local/bin' "$HOME/.bashrc" || echo 'export PATH="$HOME/.local/bin:$PATH"' >>"$HOME/.bashrc" || true
    exit 0
  EOT
}
